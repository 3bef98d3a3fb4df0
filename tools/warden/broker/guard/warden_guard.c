/*
 * warden_guard: a mosquitto 2.0 plugin that enforces Warden's identity rules and takes
 * revocations at run time, over the broker's own TLS listener.
 *
 * Why a plugin: with `use_identity_as_username` mosquitto 2.0 skips every authentication
 * callback (handle_connect.c: "Authentication assumed to be cleared"), so the dynamic security
 * plugin cannot refuse a certificate identity: its "disabled" flag is checked only for
 * username/password logins. A SIGHUP reloads the CRL, but only a process on the broker's host
 * can send one. This plugin gives a broker anywhere the same runtime control, reached by an
 * admin principal over mutual TLS on `$CONTROL/warden/v1`.
 *
 * What it does:
 *  - ACL (runs before mosquitto's acl_file, which then decides what is left):
 *    a banned name gets nothing; a name that is neither a valid thing name nor a principal
 *    listed in the ACL file (`user` lines) gets nothing (a CA-signed certificate for a principal
 *    taken out of the policy, or a CN outside the naming rules such as "t1/telemetry", would
 *    otherwise fall under the device `pattern` lines); a session name `<principal>@<tag>` (one
 *    of several sessions of one principal, each with its own client id) is renamed to its
 *    principal, so the acl_file applies the principal's own rules.
 *  - Signals for `warden monitor` (it reads the broker's log): a device's publish that no `pattern`
 *    line of the ACL file allows (the acl_file will deny it too: a device has no `user` block) is
 *    logged as "warden_guard: denied publish from NAME to 'TOPIC'" (mosquitto itself logs a denial
 *    only at debug level, with every message); a name the guard refuses is logged likewise, with
 *    its reason. At most LOG_PER_SECOND such lines a second: a flood cannot fill the disk.
 *  - Quarantine (`warden monitor`'s action): a quarantined device may publish on its status and
 *    metrics topics (`dt/<app>/<name>/status|metrics`, the acl_file still checks the app) and on
 *    nothing else, and receives nothing; its subscriptions are granted but deliver nothing, as
 *    mosquitto does for a forbidden filter, so its session stays up and its status keeps coming.
 *  - Control (`$CONTROL/warden/v1`, admin principals only; answer on .../response):
 *      "<id> ping"                      -> "<id> ok warden-guard 1 ..."
 *      "<id> crl\n<PEM>"                -> writes the crlfile, reloads (answer once reloaded)
 *      "<id> acl\n<text>"               -> writes the acl_file, reloads (answer once reloaded)
 *      "<id> ban NAME..."               -> NAME gets nothing from now on (kept in the ban file)
 *      "<id> kick NAME..."              -> closes every session of NAME (and of NAME@...)
 *      "<id> quarantine\n<names>"       -> the quarantine list, replaced whole (kept in its file)
 *    A reload is mosquitto's own (SIGHUP to itself): it re-reads the CRL, certificates and ACL.
 *
 * What it must not do: grant anything (it only denies or defers), or keep state that a restart
 * cannot rebuild from its files (ban file, ACL file, CRL, quarantine file).
 *
 * Build: cc -shared -fPIC -O2 -o warden_guard.so warden_guard.c   (Debian: mosquitto-dev)
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define CONTROL_TOPIC "$CONTROL/warden/v1"
#define RESPONSE_TOPIC "$CONTROL/warden/v1/response"
#define MAX_NAMES 4096
#define MAX_NAME 192
#define MAX_PENDING 32
#define MAX_PATTERNS 64
#define LOG_PER_SECOND 20

static mosquitto_plugin_id_t *plugin_id;
static char *acl_path, *crl_path, *ban_path, *quarantine_path;
static char admin_prefix[64] = "admin.";

struct names { char **v; int n; };
static struct names principals;   /* `user` lines of the ACL file */
static struct names banned;
static struct names quarantined;
/* the ACL file's `pattern` lines that concern a publish: deny ones, and write/readwrite ones */
static struct names deny_patterns, write_patterns;

struct pending { char client[MAX_NAME]; char id[40]; };
static struct pending pending[MAX_PENDING];
static int npending;

static void names_clear(struct names *s)
{
	for(int i = 0; i < s->n; i++) free(s->v[i]);
	free(s->v);
	s->v = NULL;
	s->n = 0;
}

static bool names_has(const struct names *s, const char *name, size_t len)
{
	for(int i = 0; i < s->n; i++){
		if(strlen(s->v[i]) == len && !memcmp(s->v[i], name, len)) return true;
	}
	return false;
}

static int names_add(struct names *s, const char *name)
{
	if(names_has(s, name, strlen(name))) return 0;
	if(s->n >= MAX_NAMES) return -1;
	char **v = realloc(s->v, sizeof(char *) * (size_t)(s->n + 1));
	if(!v) return -1;
	s->v = v;
	s->v[s->n] = strdup(name);
	if(!s->v[s->n]) return -1;
	s->n++;
	return 0;
}

/* A thing name: 1-64 characters from [A-Za-z0-9:_-] (tools/warden/fleet/names.py: the CN limit). */
static bool is_thing(const char *u, size_t len)
{
	if(len == 0 || len > 64) return false;
	for(size_t i = 0; i < len; i++){
		char c = u[i];
		if(!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
				|| c == ':' || c == '_' || c == '-')) return false;
	}
	return true;
}

static void trim(char *s)
{
	size_t n = strlen(s);
	while(n && (s[n-1] == '\n' || s[n-1] == '\r' || s[n-1] == ' ' || s[n-1] == '\t')) s[--n] = 0;
}

/* The principals are the ACL file's `user` lines: the policy's rendering names every one. */
static void load_principals(void)
{
	names_clear(&principals);
	names_clear(&deny_patterns);
	names_clear(&write_patterns);
	FILE *f = acl_path ? fopen(acl_path, "r") : NULL;
	if(!f){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "warden_guard: cannot read acl file %s: no principal gets anything",
				acl_path ? acl_path : "(unset)");
		return;
	}
	char line[512];
	while(fgets(line, sizeof line, f)){
		trim(line);
		if(!strncmp(line, "user ", 5)){
			char *name = line + 5;
			while(*name == ' ') name++;
			if(*name) names_add(&principals, name);
		}else if(!strncmp(line, "pattern ", 8)){
			char *rest = line + 8;
			while(*rest == ' ') rest++;
			struct names *into = NULL;
			if(!strncmp(rest, "deny ", 5)){ into = &deny_patterns; rest += 5; }
			else if(!strncmp(rest, "write ", 6)){ into = &write_patterns; rest += 6; }
			else if(!strncmp(rest, "readwrite ", 10)){ into = &write_patterns; rest += 10; }
			else if(strncmp(rest, "read ", 5) && !strchr(rest, ' ')) into = &write_patterns;  /* no access word: readwrite */
			while(*rest == ' ') rest++;
			if(into && *rest && into->n < MAX_PATTERNS) names_add(into, rest);
		}
	}
	fclose(f);
}

static void load_bans(void)
{
	names_clear(&banned);
	FILE *f = ban_path ? fopen(ban_path, "r") : NULL;
	if(!f) return;
	char line[MAX_NAME + 2];
	while(fgets(line, sizeof line, f)){
		trim(line);
		if(*line) names_add(&banned, line);
	}
	fclose(f);
}

static void load_quarantine(void)
{
	names_clear(&quarantined);
	FILE *f = quarantine_path ? fopen(quarantine_path, "r") : NULL;
	if(!f) return;
	char line[MAX_NAME + 2];
	while(fgets(line, sizeof line, f)){
		trim(line);
		if(*line) names_add(&quarantined, line);
	}
	fclose(f);
}

/* Replace `path` with `data` atomically: a power cut leaves the old or the new file. */
static int write_atomic(const char *path, const void *data, size_t len)
{
	char tmp[4096];
	if(snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return ENAMETOOLONG;
	FILE *f = fopen(tmp, "w");
	if(!f) return errno;
	if(len && fwrite(data, 1, len, f) != len){
		int e = errno;
		fclose(f);
		unlink(tmp);
		return e ? e : EIO;
	}
	if(fflush(f) || fsync(fileno(f))){
		int e = errno;
		fclose(f);
		unlink(tmp);
		return e;
	}
	fclose(f);
	if(rename(tmp, path)){
		int e = errno;
		unlink(tmp);
		return e;
	}
	return 0;
}

static void respond(const char *client, const char *id, const char *text)
{
	char buf[512];
	int n = snprintf(buf, sizeof buf, "%s %s", id, text);
	if(n < 0) return;
	if(n >= (int)sizeof buf) n = (int)sizeof buf - 1;
	mosquitto_broker_publish_copy(client, RESPONSE_TOPIC, n, buf, 1, false, NULL);
}

static void kick_name(const char *name)
{
	/* every session of the name; a session still named NAME@tag has done nothing yet, and the
	 * ban refuses it everything from its first request */
	mosquitto_kick_client_by_username(name, true);
}

/* Does MQTT filter `flt` (with %u and %c standing for `name`) match `topic`? */
static bool filter_matches(const char *flt, const char *topic, const char *name)
{
	char buf[1024];
	size_t n = 0, nl = strlen(name);
	for(const char *p = flt; *p; p++){
		if(p[0] == '%' && (p[1] == 'u' || p[1] == 'c')){
			if(n + nl >= sizeof buf) return false;
			memcpy(buf + n, name, nl);
			n += nl;
			p++;
		}else{
			if(n + 1 >= sizeof buf) return false;
			buf[n++] = *p;
		}
	}
	buf[n] = 0;
	if(topic[0] == '$' && buf[0] != '$') return false;
	const char *f = buf, *t = topic;
	while(*f){
		if(f[0] == '#') return true;     /* the rest, and the parent level itself */
		if(f[0] == '+'){
			while(*t && *t != '/') t++;
			f++;
		}else{
			while(*f && *f != '/'){
				if(*f != *t) return false;
				f++; t++;
			}
			if(*t && *t != '/') return false;
		}
		if(!*f) return !*t;
		/* *f == '/' */
		if(*t != '/') return !strcmp(f, "/#");   /* "a/#" matches "a" */
		f++; t++;
	}
	return !*t;
}

/* Would the ACL file's patterns let device `name` publish on `topic`? (deny lines first) */
static bool patterns_allow_write(const char *name, const char *topic)
{
	for(int i = 0; i < deny_patterns.n; i++){
		if(filter_matches(deny_patterns.v[i], topic, name)) return false;
	}
	for(int i = 0; i < write_patterns.n; i++){
		if(filter_matches(write_patterns.v[i], topic, name)) return true;
	}
	return false;
}

/* A quarantined device's own status and metrics topics: dt/<one level>/<name>/status|metrics. */
static bool quarantine_allows(const char *name, const char *topic)
{
	if(strncmp(topic, "dt/", 3)) return false;
	const char *app_end = strchr(topic + 3, '/');
	if(!app_end || app_end == topic + 3) return false;
	size_t nl = strlen(name);
	if(strncmp(app_end + 1, name, nl) || app_end[1 + nl] != '/') return false;
	const char *leaf = app_end + 2 + nl;
	return !strcmp(leaf, "status") || !strcmp(leaf, "metrics");
}

/* One log line for `warden monitor`, at most LOG_PER_SECOND a second. */
static void log_denied(const char *name, const char *topic, const char *why)
{
	static time_t second;
	static int count;
	time_t now = time(NULL);
	if(now != second){ second = now; count = 0; }
	if(count++ >= LOG_PER_SECOND) return;
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "warden_guard: denied publish from %s to '%s'%s", name, topic, why);
}

static int on_acl(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	(void)event; (void)userdata;
	const char *u = mosquitto_client_username(ed->client);
	if(!u) return MOSQ_ERR_ACL_DENIED;
	size_t len = strlen(u);
	if(names_has(&banned, u, len)){
		if(ed->access == MOSQ_ACL_WRITE) log_denied(u, ed->topic, " (banned)");
		return MOSQ_ERR_ACL_DENIED;
	}
	const char *at = strchr(u, '@');
	if(at){
		/* a session of a principal: its own client id, the principal's rules */
		size_t blen = (size_t)(at - u);
		if(!names_has(&principals, u, blen) || names_has(&banned, u, blen)) return MOSQ_ERR_ACL_DENIED;
		if(!is_thing(at + 1, strlen(at + 1)) || strlen(at + 1) > 32) return MOSQ_ERR_ACL_DENIED;
		char base[MAX_NAME];
		if(blen >= sizeof base) return MOSQ_ERR_ACL_DENIED;
		memcpy(base, u, blen);
		base[blen] = 0;
		if(mosquitto_set_username(ed->client, base) != MOSQ_ERR_SUCCESS) return MOSQ_ERR_ACL_DENIED;
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	if(names_has(&principals, u, len)) return MOSQ_ERR_PLUGIN_DEFER;
	if(strchr(u, '.') == NULL && is_thing(u, len)){
		if(names_has(&quarantined, u, len)){
			if(ed->access == MOSQ_ACL_SUBSCRIBE || ed->access == MOSQ_ACL_UNSUBSCRIBE) return MOSQ_ERR_PLUGIN_DEFER;
			if(ed->access == MOSQ_ACL_WRITE && quarantine_allows(u, ed->topic)) return MOSQ_ERR_PLUGIN_DEFER;
			if(ed->access == MOSQ_ACL_WRITE) log_denied(u, ed->topic, " (quarantined)");
			return MOSQ_ERR_ACL_DENIED;
		}
		if(ed->access == MOSQ_ACL_WRITE && !patterns_allow_write(u, ed->topic)) log_denied(u, ed->topic, "");
		return MOSQ_ERR_PLUGIN_DEFER;   /* the acl_file decides */
	}
	if(ed->access == MOSQ_ACL_WRITE) log_denied(u, ed->topic, " (not a name of the policy)");
	return MOSQ_ERR_ACL_DENIED;   /* not a device, not a principal of the policy */
}

static bool is_admin(const char *u)
{
	if(!u) return false;
	size_t len = strlen(u);
	return !strncmp(u, admin_prefix, strlen(admin_prefix)) && names_has(&principals, u, len)
		&& !names_has(&banned, u, len);
}

static int request_reload(const char *client, const char *id)
{
	if(npending >= MAX_PENDING) return -1;
	snprintf(pending[npending].client, sizeof pending[npending].client, "%s", client);
	snprintf(pending[npending].id, sizeof pending[npending].id, "%s", id);
	npending++;
	/* mosquitto's own reload: it handles the signal at the next turn of its loop */
	kill(getpid(), SIGHUP);
	return 0;
}

static int on_reload(int event, void *event_data, void *userdata)
{
	(void)event; (void)event_data; (void)userdata;
	/* Called after mosquitto has re-read its config, certificates and CRL. */
	load_principals();
	load_bans();
	for(int i = 0; i < npending; i++){
		char info[64];
		snprintf(info, sizeof info, "ok reloaded principals=%d banned=%d", principals.n, banned.n);
		respond(pending[i].client, pending[i].id, info);
	}
	npending = 0;
	return MOSQ_ERR_SUCCESS;
}

static int on_control(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_control *ed = event_data;
	(void)event; (void)userdata;
	const char *client = mosquitto_client_id(ed->client);
	const char *user = mosquitto_client_username(ed->client);
	if(!is_admin(user)){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "warden_guard: control command from %s refused: not an admin principal",
				user ? user : "(no name)");
		return MOSQ_ERR_ACL_DENIED;
	}
	const char *p = ed->payload;
	uint32_t len = ed->payloadlen;
	const char *nl = memchr(p, '\n', len);
	size_t hlen = nl ? (size_t)(nl - p) : len;
	char head[8192];
	if(hlen >= sizeof head){
		respond(client, "-", "error command line too long");
		return MOSQ_ERR_SUCCESS;
	}
	memcpy(head, p, hlen);
	head[hlen] = 0;
	const char *body = nl ? nl + 1 : p + len;
	size_t blen = (size_t)(p + len - body);

	char *save = NULL;
	char *id = strtok_r(head, " ", &save);
	char *verb = id ? strtok_r(NULL, " ", &save) : NULL;
	if(!id || !verb || strlen(id) >= 40){
		respond(client, "-", "error expected: <id> <verb> [args]");
		return MOSQ_ERR_SUCCESS;
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "warden_guard: %s from %s", verb, user);
	if(!strcmp(verb, "ping")){
		char info[96];
		snprintf(info, sizeof info, "ok warden-guard 1 principals=%d banned=%d", principals.n, banned.n);
		respond(client, id, info);
	}else if(!strcmp(verb, "crl") || !strcmp(verb, "acl")){
		const char *path = verb[0] == 'c' ? crl_path : acl_path;
		if(!path){
			respond(client, id, "error the plugin has no path for it (plugin_opt_crl_file / plugin_opt_acl_file)");
			return MOSQ_ERR_SUCCESS;
		}
		if(verb[0] == 'c' && (blen < 30 || memcmp(body, "-----BEGIN X509 CRL-----", 24))){
			respond(client, id, "error not a PEM CRL");
			return MOSQ_ERR_SUCCESS;
		}
		int e = write_atomic(path, body, blen);
		if(e){
			char info[300];
			snprintf(info, sizeof info, "error cannot write %s: %s", path, strerror(e));
			respond(client, id, info);
		}else if(request_reload(client, id)){
			respond(client, id, "error too many reloads pending");
		}
	}else if(!strcmp(verb, "ban") || !strcmp(verb, "kick")){
		bool ban = verb[0] == 'b';
		int n = 0;
		for(char *name = strtok_r(NULL, " ", &save); name; name = strtok_r(NULL, " ", &save)){
			if(strlen(name) >= MAX_NAME) continue;
			if(ban && !names_has(&banned, name, strlen(name))){
				if(names_add(&banned, name)){
					respond(client, id, "error ban list full");
					return MOSQ_ERR_SUCCESS;
				}
			}
			kick_name(name);
			n++;
		}
		if(ban && ban_path){
			/* the ban file is the list itself, rewritten whole */
			size_t cap = 1, used = 0;
			for(int i = 0; i < banned.n; i++) cap += strlen(banned.v[i]) + 1;
			char *text = malloc(cap);
			if(!text){
				respond(client, id, "error out of memory");
				return MOSQ_ERR_SUCCESS;
			}
			for(int i = 0; i < banned.n; i++){
				size_t l = strlen(banned.v[i]);
				memcpy(text + used, banned.v[i], l);
				used += l;
				text[used++] = '\n';
			}
			int e = write_atomic(ban_path, text, used);
			free(text);
			if(e){
				char info[300];
				snprintf(info, sizeof info, "error banned in memory but cannot write %s: %s", ban_path, strerror(e));
				respond(client, id, info);
				return MOSQ_ERR_SUCCESS;
			}
		}
		char info[64];
		snprintf(info, sizeof info, "ok %d", n);
		respond(client, id, info);
	}else if(!strcmp(verb, "quarantine")){
		/* the whole list, one name a line: replacing it whole makes a release the same command */
		struct names next = {NULL, 0};
		const char *q = body, *end = body + blen;
		while(q < end){
			const char *e = memchr(q, '\n', (size_t)(end - q));
			size_t l = e ? (size_t)(e - q) : (size_t)(end - q);
			if(l && l < MAX_NAME){
				char name[MAX_NAME];
				memcpy(name, q, l);
				name[l] = 0;
				trim(name);
				if(*name && (!is_thing(name, strlen(name)) || names_add(&next, name))){
					names_clear(&next);
					respond(client, id, "error not a thing name, or the list is full");
					return MOSQ_ERR_SUCCESS;
				}
			}
			q += l + 1;
		}
		if(quarantine_path){
			int e = write_atomic(quarantine_path, body, blen);
			if(e){
				names_clear(&next);
				char info[300];
				snprintf(info, sizeof info, "error cannot write %s: %s", quarantine_path, strerror(e));
				respond(client, id, info);
				return MOSQ_ERR_SUCCESS;
			}
		}
		names_clear(&quarantined);
		quarantined = next;
		char info[64];
		snprintf(info, sizeof info, "ok %d", quarantined.n);
		respond(client, id, info);
	}else{
		respond(client, id, "error unknown verb (ping, crl, acl, ban, kick, quarantine)");
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **user_data, struct mosquitto_opt *opts, int opt_count)
{
	(void)user_data;
	plugin_id = identifier;
	for(int i = 0; i < opt_count; i++){
		if(!strcmp(opts[i].key, "acl_file")) acl_path = strdup(opts[i].value);
		else if(!strcmp(opts[i].key, "crl_file")) crl_path = strdup(opts[i].value);
		else if(!strcmp(opts[i].key, "ban_file")) ban_path = strdup(opts[i].value);
		else if(!strcmp(opts[i].key, "quarantine_file")) quarantine_path = strdup(opts[i].value);
		else if(!strcmp(opts[i].key, "admin_prefix")) snprintf(admin_prefix, sizeof admin_prefix, "%s", opts[i].value);
	}
	load_principals();
	load_bans();
	load_quarantine();
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "warden_guard: %d principals, %d banned names, %d quarantined",
			principals.n, banned.n, quarantined.n);
	int rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl, NULL, NULL);
	if(!rc) rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL, NULL);
	if(!rc) rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_CONTROL, on_control, CONTROL_TOPIC, NULL);
	return rc;
}

int mosquitto_plugin_cleanup(void *user_data, struct mosquitto_opt *opts, int opt_count)
{
	(void)user_data; (void)opts; (void)opt_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_CONTROL, on_control, CONTROL_TOPIC);
	names_clear(&principals);
	names_clear(&banned);
	names_clear(&quarantined);
	names_clear(&deny_patterns);
	names_clear(&write_patterns);
	free(acl_path);
	free(quarantine_path);
	free(crl_path);
	free(ban_path);
	return MOSQ_ERR_SUCCESS;
}
