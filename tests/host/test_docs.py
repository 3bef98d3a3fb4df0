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
