"""Every reference to the documentation resolves.

(a) Relative Markdown links in README.md, CHANGELOG.md and docs/*.md point to files that exist and,
    with a #anchor, to a heading that exists there (GitHub's heading slugs).
(b) References of the form docs/<name>.md in the code and scripts (optionally followed by a quoted
    section name, after a comma, a colon or an opening parenthesis) name an existing document, and
    the quoted section is one of its headings.
(c) No file outside .venv cites the old, external design file any more (docs/design.md replaces it).
(d) README.md stays an entry page: between 150 and 250 lines.
(e) A README reference followed by a quoted section name names a heading that README.md has.

Paths of host modules mentioned in the documents (tools/warden/...) are not checked here: that
package is being regrouped, and the documents name modules in prose, not as links.
"""
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

# Where code may cite documents: these folders (recursively) and a few top-level files.
CODE_DIRS = ("firmware", "lib", "twin", "tools", "tests", "bench", "scripts")
CODE_TOP = ("boot.py", "main.py", "manifest.py", "Makefile")
CODE_SUFFIXES = (".py", ".c", ".md", ".sh")
# Never scanned: environments, git's own files, caches and generated output.
SKIP_DIRS = {".venv", ".git", "__pycache__", ".pytest_cache", "node_modules", "build", ".warden"}

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"`+[^`]*`+")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
# docs/<name>.md, then optionally `, "Section"`, `: 'Section'` or ` ("Section")`
DOC_REF = re.compile(r"""(?<![\w./-])docs/([\w.-]+\.md)(?:(?:\s*[,:]\s*\(?|\s*\()\s*(["'])(.+?)\2)?""")
# README (or README.md), then `, "Section"`, `: 'Section'`, ` ("Section")` or ` 'Section'`
README_REF = re.compile(r"""\bREADME(?:\.md)?(?:\s*[,:]\s*\(?|\s*\(|\s+)\s*(["'])(.+?)\1""")
# Assembled, so that this file does not mention it itself.
OLD_DESIGN = "DESIGN" + ".md"


def slug(text):
    """GitHub's anchor for a heading: lower case, inline markup and punctuation dropped (letters,
    digits, '_' and '-' stay), each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def markdown_lines(path):
    """(line number, text) of every line outside fenced code blocks."""
    inside = False
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            yield no, line


_anchor_cache = {}


def anchors(path):
    """Every anchor GitHub makes for the headings of a Markdown file (duplicates get -1, -2...)."""
    path = path.resolve()
    if path not in _anchor_cache:
        seen = {}
        out = set()
        for _, line in markdown_lines(path):
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
        _anchor_cache[path] = out
    return _anchor_cache[path]


def rel(path):
    return path.relative_to(ROOT).as_posix()


def doc_files():
    return [README, ROOT / "CHANGELOG.md"] + sorted(DOCS.glob("*.md"))


def walk(top):
    """Files under `top`, skipping the folders in SKIP_DIRS and egg-info metadata."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in filenames:
            yield Path(dirpath) / name


def code_files():
    for d in CODE_DIRS:
        if (ROOT / d).is_dir():
            for p in walk(ROOT / d):
                if p.suffix in CODE_SUFFIXES or p.name == "Makefile":
                    yield p
    for name in CODE_TOP:
        if (ROOT / name).is_file():
            yield ROOT / name


def read_text(path):
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def check_section(where, target, section, problems):
    if slug(section) not in anchors(target):
        problems.append(f"{where}: {rel(target)} has no heading {section!r}")


def test_markdown_links_resolve():
    problems = []
    for doc in doc_files():
        assert doc.is_file(), f"{rel(doc)} is missing"
        for no, line in markdown_lines(doc):
            text = INLINE_CODE.sub("", line)
            targets = LINK.findall(text)
            m = REF_DEF.match(text)
            if m:
                targets.append(m.group(1))
            for target in targets:
                if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
                    continue
                path_part, _, anchor = target.partition("#")
                where = f"{rel(doc)}:{no}: ({target})"
                dest = (doc.parent / path_part).resolve() if path_part else doc
                if path_part.startswith("/") or not dest.exists():
                    problems.append(f"{where}: no such file")
                    continue
                if anchor:
                    if dest.suffix != ".md" or dest.is_dir():
                        problems.append(f"{where}: an anchor into a file that is not Markdown")
                    elif anchor.lower() not in anchors(dest):
                        problems.append(f"{where}: {rel(dest)} has no heading with anchor #{anchor}")
    assert not problems, "broken links in the documentation:\n  " + "\n  ".join(problems)


def test_doc_references_in_code_resolve():
    problems = []
    for path in code_files():
        text = read_text(path)
        if text is None or "docs/" not in text:
            continue
        for no, line in enumerate(text.splitlines(), 1):
            for m in DOC_REF.finditer(line):
                where = f"{rel(path)}:{no}"
                target = DOCS / m.group(1)
                if not target.is_file():
                    problems.append(f"{where}: docs/{m.group(1)} does not exist")
                elif m.group(3):
                    check_section(where, target, m.group(3), problems)
    assert not problems, "broken docs/ references in the code:\n  " + "\n  ".join(problems)


def test_no_file_cites_the_old_design_file():
    needle = OLD_DESIGN.encode()
    hits = []
    for path in walk(ROOT):
        try:
            if path.stat().st_size > 4_000_000:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if needle in data:
            hits.append(rel(path))
    assert not hits, (f"these files still cite {OLD_DESIGN}, which is not part of the project; "
                      "cite the docs/ file and section that holds the text:\n  " + "\n  ".join(hits))


def test_readme_is_an_entry_page():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert 150 <= n <= 250, f"README.md has {n} lines: keep it between 150 and 250, move detail to docs/"


def test_readme_section_references_resolve():
    problems = []
    for path in list(code_files()) + doc_files():
        text = read_text(path)
        if text is None or "README" not in text:
            continue
        for no, line in enumerate(text.splitlines(), 1):
            for m in README_REF.finditer(line):
                check_section(f"{rel(path)}:{no}", README, m.group(2), problems)
    assert not problems, ("README references to sections it does not have (the text may have "
                          "moved to docs/):\n  " + "\n  ".join(problems))


# -- the documents agree with the code ------------------------------------------------------------
# (f) Every `warden ...` command line shown in README.md and docs/*.md (in a code block, or as
#     inline code) names a command that exists, and each --option it shows is one of that command's.
# (g) The roles the documents describe (the roles table, the broker's list of who may do what) are
#     what the default policy renders for mosquitto.
# (h) Every WardenError the host tools raise carries a hint, as README.md promises ("followed by
#     what to do"): given at the raise, or a default of its class.

# A command in a code block: the line starts with it (after a shell prompt); inline: the span does.
CODE_COMMAND = re.compile(r"^\s*(?:\$\s+)?(?:\.venv/bin/)?(warden\s.*)$")
INLINE_COMMAND = re.compile(r"`(?:\.venv/bin/)?(warden\s[^`]*)`")
SIBLING = re.compile(r"\s*/\s*`(?!warden\s)([a-z][^`]*)`")
TOP_COMMANDS = set()   # filled from the click tree by command_lines()
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_.-]*$|^\.\.\.$")
# Options every command has: the main group's, and click's own.
GLOBAL_OPTIONS = {"--help", "--state", "--version"}


def command_lines():
    """(where, command text) of every `warden ...` shown in the documents."""
    from warden.cli import main

    TOP_COMMANDS.update(main.commands)
    for doc in [README] + sorted(DOCS.glob("*.md")):
        inside, pending = False, None
        for no, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            if FENCE.match(line):
                inside, pending = not inside, None
                continue
            where = f"{rel(doc)}:{no}"
            if inside or line.startswith("    "):   # fenced, or an indented code block
                if pending is not None:
                    text = pending[1] + " " + line.strip()
                    where = pending[0]
                else:
                    m = CODE_COMMAND.match(line)
                    if not m:
                        continue
                    text = m.group(1)
                text = text.split(" # ")[0].split("  #")[0].strip()
                if text.endswith("\\"):   # continued on the next line
                    pending = (where, text[:-1].strip())
                    continue
                pending = None
                yield where, text
            else:
                text = line.replace("\\|", "|")
                for m in INLINE_COMMAND.finditer(text):
                    yield where, m.group(1)
                    # `warden device add THING` / `device list` / `rotate THING`: siblings of it
                    group = m.group(1).split()[1]
                    for s in SIBLING.finditer(text, m.end()):
                        if s.start() != m.end():
                            break
                        yield where, "warden " + (s.group(1) if s.group(1).split()[0] in TOP_COMMANDS
                                                  else f"{group} {s.group(1)}")
                        m = s


def _tokens(text):
    out = []
    for tok in text.split():
        tok = tok.strip("[]()<>,;").split("=")[0]
        if tok:
            out.append(tok)
    return out


def check_command(text, problems, where):
    """Resolve `text` ('warden a b --opt ...') on the click tree; note what does not exist."""
    import click

    from warden.cli import main

    def walk(cmd, path, toks):
        i = 0
        while isinstance(cmd, click.Group) and i < len(toks) and not toks[i].startswith("-"):
            word = toks[i]
            if PLACEHOLDER.match(word):   # `warden COMMAND --help`: any command
                return
            names = word.split("|") if "|" in word else word.split("/")
            if len(names) > 1:            # `ota push|status`, `principal add/list`: each of them
                for n in names:
                    walk(cmd, path, [n] + toks[i + 1:])
                return
            sub = cmd.commands.get(word)
            if sub is None:
                problems.append(f"{where}: `{text}`: {' '.join(path)} has no command {word!r}")
                return
            cmd, path, i = sub, path + [word], i + 1
        known = GLOBAL_OPTIONS | {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        for tok in toks[i:]:
            for opt in re.split(r"[|/]", tok) if tok.startswith("--") else ():
                opt = opt.rstrip(".:")
                if opt.startswith("--") and len(opt) > 2 and opt not in known:
                    problems.append(f"{where}: `{text}`: {' '.join(path)} has no option {opt}")

    toks = _tokens(text)
    walk(main, ["warden"], toks[1:])


def test_every_documented_command_line_exists_with_its_options():
    problems = []
    seen = 0
    for where, text in command_lines():
        seen += 1
        check_command(text, problems, where)
    assert seen > 100, f"only {seen} command lines found: is the parser broken?"
    assert not problems, ("the documents show warden commands or options that do not exist (fix the document, "
                          "or the code it describes):\n  " + "\n  ".join(problems))


def test_the_command_line_check_finds_a_wrong_command_and_a_wrong_option():
    problems = []
    check_command("warden deploy THING --port P --broker-host H --image-only OUT", problems, "ok")
    check_command("warden ota push|status THING --as technician.bob", problems, "ok")
    check_command("warden flash --erase/--no-erase", problems, "ok")
    assert problems == []
    check_command("warden ota pusj THING", problems, "a")
    check_command("warden deploy THING --brokr-host H", problems, "b")
    check_command("warden principal add/lst NAME", problems, "c")
    assert [p.split(":")[0] for p in problems] == ["a", "b", "c"], problems


# The policy as the documents state it: (role, principal or "%u" for every device) -> {(access, topic)}
TOPIC = re.compile(r"`([^`\s]*/[^`\s]*)`")


def _doc_rules(clauses, app):
    """{(access, topic)} from prose clauses like 'publish `a`', 'subscribe to and receive `b` and `c`'."""
    rules, access = set(), None
    for clause in clauses:
        topics = TOPIC.findall(clause)
        words = re.sub(r"`[^`]*`", "", clause).lower()
        # a clause without a verb goes on with the one before ('publish `a`, `b` and `c`')
        access = "write" if re.search(r"\b(publish|send)", words) else "read" if re.search(
            r"\b(subscribe|receive)", words) else access
        if not topics:
            continue
        assert access, f"no verb in {clause!r}"
        for t in topics:
            rules.add((access, t.replace("<app>", app).replace("<thing>", "%u")))
    return rules


def documented_roles(app):
    """{where: {role: (principals, rules)}} from each roles table ('| role | who | may |') and the
    broker section's list in docs/security.md."""
    found = {}
    for doc in [README] + sorted(DOCS.glob("*.md")):
        lines = list(markdown_lines(doc))
        for k, (no, line) in enumerate(lines):
            if re.match(r"^\|\s*role\s*\|\s*who\s*\|\s*may\s*\|", line):
                roles = {}
                for _, row in lines[k + 2:]:
                    if not row.startswith("|"):
                        break
                    role, who, may = [c.strip() for c in row.strip().strip("|").split("|")][:3]
                    principals = re.findall(r"`([^`]+)`", who) or ["%u"]
                    roles[role.strip("`")] = (set(principals), _doc_rules(re.split(r"[;,]", may), app))
                found[f"{rel(doc)}:{no} (roles table)"] = roles
    security = DOCS / "security.md"
    bullets, inside = [], False
    for _, line in markdown_lines(security):
        if line.startswith("## "):
            inside = line.strip() == "## The broker"
        elif inside and line.startswith("- "):
            bullets.append(line[2:])
        elif inside and bullets and line.startswith("  ") and line.strip():   # the bullet goes on
            bullets[-1] += " " + line.strip()
    roles = {}
    for text in bullets:
        m = re.match(r"^(\w+?)s\b[^:]*?: (.*)$", text)
        if m and m.group(1) in ("device", "operator", "technician"):
            roles[m.group(1)] = (None, _doc_rules(re.split(r"[;,]", m.group(2)), app))
    found["docs/security.md, 'The broker' (who may do what)"] = roles
    return found


def rendered_roles(app):
    """{role: (principals, rules)} from the mosquitto ACL the default policy renders."""
    from warden.policy.mosquitto import render_mosquitto_acl

    roles, role, user = {}, None, None
    for line in render_mosquitto_acl(app).splitlines():
        m = re.match(r"^# role (\w+)", line)
        if m:
            role, user = m.group(1), None
            roles.setdefault(role, (set(), set()))
            continue
        parts = line.split()
        if parts[:1] == ["pattern"]:
            roles[role][0].add("%u")
            roles[role][1].add((parts[1], parts[2]))
        elif parts[:1] == ["user"]:
            user = parts[1]
            roles[role][0].add(user)
        elif parts[:1] == ["topic"] and parts[1] != "deny":
            roles[role][1].add((parts[1], parts[2]))
    return roles


def test_the_documented_roles_are_what_the_policy_renders():
    app = "warden"
    acl = rendered_roles(app)
    assert set(acl) == {"device", "operator", "technician"}, acl
    problems = []
    for where, roles in documented_roles(app).items():
        if set(roles) != set(acl):
            problems.append(f"{where}: roles {sorted(roles)}, the policy has {sorted(acl)}")
        for name, (principals, rules) in roles.items():
            if name not in acl:
                continue
            if principals is not None and principals != acl[name][0]:
                problems.append(f"{where}: {name} is {sorted(principals)}, the ACL says {sorted(acl[name][0])}")
            if rules != acl[name][1]:
                problems.append(f"{where}: {name} may {sorted(rules)}, the ACL allows {sorted(acl[name][1])}")
    assert not problems, "the documents describe other roles than the policy's:\n  " + "\n  ".join(problems)


def test_the_roles_check_parses_the_prose_it_reads():
    got = _doc_rules(["publish `cmd/<app>/+/ota` (OTA commands)", " `cmd/<app>/+/logs`",
                      " subscribe to and receive `dt/<app>/+/ota` and `dt/<app>/<thing>/status`", " send nothing"], "w")
    assert got == {("write", "cmd/w/+/ota"), ("write", "cmd/w/+/logs"), ("read", "dt/w/+/ota"), ("read", "dt/w/%u/status")}


def _error_classes(files):
    """{class name: (base names, has a default hint)} of every class defined in `files`."""
    import ast

    out = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = [b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases]
                hinted = any(isinstance(s, ast.Assign) and any(getattr(t, "id", None) == "hint" for t in s.targets)
                             and not (isinstance(s.value, ast.Constant) and s.value.value is None) for s in node.body)
                out[node.name] = (bases, hinted)
    return out


def raises_without_hint(files):
    """'path:line: Class(...)' for each raise of a WardenError subclass with no hint, given or inherited."""
    import ast

    classes = _error_classes(files)

    def lineage(name):
        seen = []
        while name in classes and name not in seen:
            seen.append(name)
            bases = classes[name][0]
            name = next((b for b in bases if b in classes or b == "WardenError"), None)
        return seen, name == "WardenError" or (seen and "WardenError" in classes[seen[-1]][0])

    out = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            f = node.exc.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            chain, is_warden = lineage(name) if name != "WardenError" else ([], True)
            if not is_warden or any(classes[c][1] for c in chain):
                continue
            if len(node.exc.args) >= 2 or any(k.arg in ("hint", None) for k in node.exc.keywords):
                continue
            out.append(f"{rel(path)}:{node.lineno}: {ast.unparse(node.exc)[:100]}")
    return out


def test_every_user_error_says_what_to_do():
    files = sorted((ROOT / "tools" / "warden").rglob("*.py"))
    missing = raises_without_hint(files)
    assert not missing, ("README.md promises every error is followed by what to do: give these a hint= (or "
                         "their class a default hint):\n  " + "\n  ".join(missing))


def test_the_hint_check_finds_an_error_without_one(tmp_path):
    (tmp_path / "m.py").write_text(
        "from warden.errors import WardenError\n"
        "class AError(WardenError):\n    pass\n"
        "class BError(AError):\n    hint = 'do this'\n"
        "class CError(AError):\n    pass\n"
        "def f(x):\n"
        "    if x == 1:\n        raise AError('no hint')\n"
        "    if x == 2:\n        raise AError('given', hint='do that')\n"
        "    if x == 3:\n        raise BError('from its class')\n"
        "    if x == 4:\n        raise CError('no hint either')\n"
        "    raise ValueError('not a user error')\n")
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        got = raises_without_hint([tmp_path / "m.py"])
    finally:
        ROOT = old
    assert [g.split(": ", 1)[1] for g in got] == ["AError('no hint')", "CError('no hint either')"], got
    # the contradiction this check was written for: an operator who may send commands
    wrong = _doc_rules(["receive `dt/<app>/+/telemetry` and `dt/<app>/+/status`", " send `cmd/<app>/+/ota`"], "warden")
    assert wrong != rendered_roles("warden")["operator"][1]
