/* docplugin: a warden plugin written from docs/protocol.md alone (no SDK, no
 * warden source). It exercises every documented op, error code and framing rule
 * and prints a transcript: "SEND <msg>", "RECV <msg> [fd]" and
 * "CHECK PASS|FAIL <name>: <detail>". A FAIL is a place where warden and
 * docs/protocol.md disagree (or where this plugin guessed wrong).
 *
 * Modes (argv[1]):
 *   main              every op and every non-framing error (default)
 *   frame:<kind>      handshake, then one framing violation, then report whether
 *                     the channel closed (kinds: see frame())
 *   wait [IDLE_MS]    handshake, then answer pings and wait for shutdown (or
 *                     IDLE_MS without a message)
 *   flood             handshake, then 40 calls at once (max_in_flight)
 *   rate, quota       rate limit (needs a policy) and KV quota checks
 *   bigkeys [C]       kv.list of 300 keys of 256 bytes that grow when escaped
 *   calls OP ARGS...  one call per pair, printing "OP ok|err <reply>"
 *   raw MSG...        each message sent as given; prints what comes back
 * argv[2] in main mode: the TCP port of the host's echo listener for net.dial.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAXMSG 65536
static int chan = -1;
static const char *ID;
static const char *VERSION = "1.0.0";
static int fails, passes;
static int pings_answered;
static int shutdown_ms = -1;

static void out(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

static void check(int ok, const char *name, const char *fmt, ...) {
    char detail[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    out("CHECK %s %s: %s\n", ok ? "PASS" : "FAIL", name, detail);
    if (ok)
        passes++;
    else
        fails++;
}

/* Prints a message, cut to 400 bytes. */
static void show(const char *dir, const char *m, size_t n, int fd) {
    if (n > 400)
        out("%s %.400s... (%zu bytes)%s\n", dir, m, n, fd >= 0 ? " [fd]" : "");
    else
        out("%s %.*s%s\n", dir, (int)n, m, fd >= 0 ? " [fd]" : "");
}

static int send_raw(const char *m, size_t n) {
    show("SEND", m, n, -1);
    ssize_t r = send(chan, m, n, MSG_NOSIGNAL);
    if (r < 0) {
        out("send: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}
static int send_str(const char *m) { return send_raw(m, strlen(m)); }

/* One received message. */
struct msg {
    char buf[MAXMSG + 1];
    ssize_t len; /* 0: EOF, -1: timeout/error */
    int fd;
    int ctrunc;
};

static ssize_t recv_one(struct msg *m, int timeout_ms) {
    struct pollfd p = {chan, POLLIN, 0};
    int pr = poll(&p, 1, timeout_ms);
    m->fd = -1;
    m->ctrunc = 0;
    if (pr <= 0) {
        m->len = -1;
        return -1;
    }
    union {
        char b[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr a;
    } ctl;
    struct iovec iov = {m->buf, MAXMSG};
    struct msghdr h = {0};
    h.msg_iov = &iov;
    h.msg_iovlen = 1;
    h.msg_control = ctl.b;
    h.msg_controllen = sizeof ctl.b;
    ssize_t n = recvmsg(chan, &h, MSG_CMSG_CLOEXEC);
    if (n < 0) {
        out("recvmsg: %s\n", strerror(errno));
        m->len = 0;
        return 0;
    }
    m->buf[n] = 0;
    m->len = n;
    if (h.msg_flags & MSG_CTRUNC)
        m->ctrunc = 1;
    if (h.msg_flags & MSG_TRUNC)
        out("NOTE datagram truncated (MSG_TRUNC)\n");
    int nfd = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (int i = 0; i < k; i++) {
                int f;
                memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
                if (nfd++ == 0)
                    m->fd = f;
                else
                    close(f);
            }
        }
    if (nfd > 1)
        check(0, "one-fd", "a message carried %d descriptors", nfd);
    if (n == 0)
        out("RECV <EOF>\n");
    else
        show("RECV", m->buf, n, m->fd);
    return n;
}

/* --- tiny JSON helpers: enough for warden's compact replies --- */
/* Pointer to the value of the first "key": in s, or NULL. */
static const char *jval(const char *s, const char *key) {
    char pat[80];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(s, pat);
    return p ? p + strlen(pat) : NULL;
}
static int jstr(const char *s, const char *key, char *dst, size_t cap) {
    const char *v = jval(s, key);
    dst[0] = 0;
    if (!v || *v != '"')
        return 0;
    v++;
    size_t i = 0;
    while (*v && *v != '"' && i + 1 < cap) {
        if (*v == '\\' && v[1])
            v++;
        dst[i++] = *v++;
    }
    dst[i] = 0;
    return 1;
}
static long long jnum(const char *s, const char *key, long long dflt) {
    const char *v = jval(s, key);
    if (!v || !(*v == '-' || (*v >= '0' && *v <= '9')))
        return dflt;
    if (*v == '-')
        return strtoll(v, NULL, 10);
    return (long long)strtoull(v, NULL, 10);
}
static int is_type(const char *s, const char *t) {
    char ty[32];
    return jstr(s, "type", ty, sizeof ty) && strcmp(ty, t) == 0;
}

/* --- replies, out of order, with pings answered on the way --- */
#define STASH 128
static struct stash {
    unsigned long long id;
    char *text;
    int fd;
} stash[STASH];
static int nstash;
static struct msg M; /* scratch */
static char last_error[MAXMSG + 1]; /* the last id-less `error` message */

/* Handles a non-reply message; returns 1 if it was one. */
static int handle_other(struct msg *m) {
    if (is_type(m->buf, "ping")) {
        char p[64];
        snprintf(p, sizeof p, "{\"type\":\"pong\",\"seq\":%lld}", jnum(m->buf, "seq", 0));
        send_str(p);
        pings_answered++;
        return 1;
    }
    if (is_type(m->buf, "shutdown")) {
        shutdown_ms = (int)jnum(m->buf, "deadline_ms", 0);
        return 1;
    }
    if (is_type(m->buf, "error")) {
        strcpy(last_error, m->buf);
        return 1;
    }
    return 0;
}

struct reply {
    char text[MAXMSG + 1];
    int fd;
    int ok;      /* 1 ok, 0 error, -1 none (EOF/timeout/id-less error) */
    char code[64];
    char message[2048];
};

static int wait_reply(unsigned long long id, struct reply *r, int timeout_ms) {
    r->fd = -1;
    r->ok = -1;
    r->code[0] = r->message[0] = r->text[0] = 0;
    for (int i = 0; i < nstash; i++)
        if (stash[i].id == id) {
            strcpy(r->text, stash[i].text);
            r->fd = stash[i].fd;
            free(stash[i].text);
            stash[i] = stash[--nstash];
            goto parse;
        }
    for (;;) {
        if (recv_one(&M, timeout_ms) <= 0) {
            strcpy(r->text, M.len == 0 ? "<EOF>" : "<timeout>");
            return -1;
        }
        if (handle_other(&M)) {
            if (is_type(M.buf, "error")) {
                strcpy(r->text, M.buf);
                jstr(M.buf, "code", r->code, sizeof r->code);
                jstr(M.buf, "message", r->message, sizeof r->message);
                return -1;
            }
            continue;
        }
        if (!is_type(M.buf, "reply")) {
            check(0, "reply-type", "unexpected message %s", M.buf);
            continue;
        }
        unsigned long long got = (unsigned long long)jnum(M.buf, "id", -1);
        if (got == id) {
            strcpy(r->text, M.buf);
            r->fd = M.fd;
            break;
        }
        if (nstash < STASH) {
            stash[nstash].id = got;
            stash[nstash].text = strdup(M.buf);
            stash[nstash].fd = M.fd;
            nstash++;
        }
    }
parse:
    if (strstr(r->text, "\"ok\":"))
        r->ok = 1;
    else {
        r->ok = 0;
        jstr(r->text, "code", r->code, sizeof r->code);
        jstr(r->text, "message", r->message, sizeof r->message);
    }
    return 0;
}

static unsigned long long next_id = 1;
static char sendbuf[MAXMSG * 2];

static void send_call(unsigned long long id, const char *op, const char *args) {
    if (args)
        snprintf(sendbuf, sizeof sendbuf, "{\"type\":\"call\",\"id\":%llu,\"op\":\"%s\",\"args\":%s}", id, op, args);
    else
        snprintf(sendbuf, sizeof sendbuf, "{\"type\":\"call\",\"id\":%llu,\"op\":\"%s\"}", id, op);
    send_str(sendbuf);
}

static struct reply R;
static struct reply *call(const char *op, const char *args) {
    unsigned long long id = next_id++;
    send_call(id, op, args);
    wait_reply(id, &R, 10000);
    return &R;
}
/* A raw text that must contain id `id`. */
static struct reply *call_raw(unsigned long long id, const char *text) {
    send_str(text);
    wait_reply(id, &R, 10000);
    return &R;
}

static void expect_ok(struct reply *r, const char *name) {
    check(r->ok == 1, name, "%s", r->text);
}
static void expect_err(struct reply *r, const char *code, const char *name) {
    check(r->ok == 0 && strcmp(r->code, code) == 0, name, "want %s, got %s", code, r->text);
}

/* --- handshake --- */
static int handshake(void) {
    char h[256];
    snprintf(h, sizeof h, "{\"type\":\"hello\",\"versions\":[1],\"plugin\":\"%s\",\"version\":\"%s\"}", ID, VERSION);
    send_str(h);
    for (;;) {
        if (recv_one(&M, 5000) <= 0)
            return -1;
        if (handle_other(&M))
            continue;
        break;
    }
    check(is_type(M.buf, "welcome"), "welcome", "%s", M.buf);
    check(jnum(M.buf, "max_message", 0) == 65536, "welcome.max_message", "%lld", jnum(M.buf, "max_message", 0));
    check(jnum(M.buf, "max_in_flight", 0) == 32, "welcome.max_in_flight", "%lld", jnum(M.buf, "max_in_flight", 0));
    check(jnum(M.buf, "version", 0) == 1, "welcome.version", "%lld", jnum(M.buf, "version", 0));
    check(jval(M.buf, "per_second") && jval(M.buf, "burst"), "welcome.rate", "%s", M.buf);
    return 0;
}

static int channel_closed(int timeout_ms) {
    for (;;) {
        ssize_t n = recv_one(&M, timeout_ms);
        if (n == 0)
            return 1;
        if (n < 0)
            return 0;
    }
}

/* --- main mode --- */
static char big[MAXMSG * 2];
static char args[MAXMSG * 2];

static void kv_tests(void) {
    struct reply *r;
    out("== kv\n");
    r = call("kv.get", "{\"key\":\"runs\"}");
    expect_err(r, "not_found", "kv.get missing");
    check(strstr(r->message, "runs") != NULL, "kv.get missing message", "%s", r->message);
    r = call("kv.put", "{\"key\":\"runs\",\"value\":\"1\"}");
    expect_ok(r, "kv.put");
    check(strcmp(r->text + strlen(r->text) - 8, "\"ok\":{}}") == 0, "kv.put ok {}", "%s", r->text);
    r = call("kv.get", "{\"key\":\"runs\"}");
    check(r->ok == 1 && strstr(r->text, "\"value\":\"1\""), "kv.get", "%s", r->text);
    /* 25 keys, paged by 10 */
    for (int i = 0; i < 25; i++) {
        snprintf(args, sizeof args, "{\"key\":\"p/%03d\",\"value\":\"v%d\"}", i, i);
        r = call("kv.put", args);
        if (r->ok != 1)
            expect_ok(r, "kv.put p/*");
    }
    char cursor[600] = "";
    int total = 0, pages = 0, order_ok = 1;
    char prevkey[300] = "";
    for (;;) {
        if (cursor[0])
            snprintf(args, sizeof args, "{\"prefix\":\"p/\",\"limit\":10,\"cursor\":\"%s\"}", cursor);
        else
            snprintf(args, sizeof args, "{\"prefix\":\"p/\",\"limit\":10}");
        r = call("kv.list", args);
        if (r->ok != 1) {
            expect_ok(r, "kv.list page");
            break;
        }
        pages++;
        const char *k = jval(r->text, "keys");
        if (!k)
            break;
        for (const char *p = k + 1; *p && *p != ']';) {
            if (*p == '"') {
                const char *e = strchr(p + 1, '"');
                char key[300];
                snprintf(key, sizeof key, "%.*s", (int)(e - p - 1), p + 1);
                if (strcmp(key, prevkey) <= 0)
                    order_ok = 0;
                strcpy(prevkey, key);
                total++;
                p = e + 1;
            } else
                p++;
        }
        const char *c = jval(r->text, "cursor");
        if (!c || strncmp(c, "null", 4) == 0)
            break;
        jstr(r->text, "cursor", cursor, sizeof cursor);
        if (pages > 10)
            break;
    }
    check(total == 25 && pages == 3 && order_ok, "kv.list paging", "total %d pages %d order %d", total, pages, order_ok);
    r = call("kv.list", "{}");
    check(r->ok == 1, "kv.list defaults", "%.200s", r->text);
    r = call("kv.list", "{\"prefix\":\"p/\",\"limit\":0}");
    expect_err(r, "bad_request", "kv.list limit 0");
    r = call("kv.list", "{\"prefix\":\"p/\",\"limit\":1001}");
    expect_err(r, "bad_request", "kv.list limit 1001");
    r = call("kv.list", "{\"prefix\":\"p/\",\"limit\":1000}");
    expect_ok(r, "kv.list limit 1000");
    r = call("kv.list", "{\"prefix\":\"p/\",\"limit\":10,\"cursor\":null}");
    check(r->ok == 1, "kv.list cursor null accepted (the value a reply gives back)", "%.200s", r->text);
    r = call("kv.list", "{\"prefix\":\"p/\",\"limit\":10,\"cursor\":\"p/020\"}");
    check(r->ok == 1 && strstr(r->text, "\"p/021\"") && !strstr(r->text, "\"p/020\""), "kv.list cursor continues after the cursor key", "%.200s", r->text);
    r = call("kv.delete", "{\"key\":\"p/000\"}");
    check(r->ok == 1 && strstr(r->text, "\"deleted\":true"), "kv.delete true", "%s", r->text);
    r = call("kv.delete", "{\"key\":\"p/000\"}");
    check(r->ok == 1 && strstr(r->text, "\"deleted\":false"), "kv.delete false", "%s", r->text);
    /* key/value limits */
    memset(big, 'k', 256);
    big[256] = 0;
    snprintf(args, sizeof args, "{\"key\":\"%s\",\"value\":\"x\"}", big);
    expect_ok(call("kv.put", args), "kv.put key 256 bytes");
    big[256] = 'k';
    big[257] = 0;
    snprintf(args, sizeof args, "{\"key\":\"%s\",\"value\":\"x\"}", big);
    r = call("kv.put", args);
    check(r->ok == 0 && (!strcmp(r->code, "bad_request") || !strcmp(r->code, "too_large")), "kv.put key 257 bytes (doc: bad_request or too_large?)", "%s", r->text);
    out("NOTE key 257 bytes answers %s\n", r->code);
    r = call("kv.put", "{\"key\":\"\",\"value\":\"x\"}");
    expect_err(r, "bad_request", "kv.put empty key");
    r = call("kv.put", "{\"key\":\"a\\u0001b\",\"value\":\"x\"}");
    expect_err(r, "bad_request", "kv.put control char in key");
    memset(big, 'v', 16384);
    big[16384] = 0;
    snprintf(args, sizeof args, "{\"key\":\"bigval\",\"value\":\"%s\"}", big);
    expect_ok(call("kv.put", args), "kv.put value 16384 bytes");
    big[16384] = 'v';
    big[16385] = 0;
    snprintf(args, sizeof args, "{\"key\":\"bigval\",\"value\":\"%s\"}", big);
    r = call("kv.put", args);
    check(r->ok == 0 && (!strcmp(r->code, "bad_request") || !strcmp(r->code, "too_large")), "kv.put value 16385 bytes", "%s", r->text);
    out("NOTE value 16385 bytes answers %s\n", r->code);
    r = call("kv.put", "{\"key\":\"a\",\"value\":1}");
    expect_err(r, "bad_request", "kv.put value not a string");
    r = call("kv.put", "{\"key\":\"a\"}");
    expect_err(r, "bad_request", "kv.put missing value");
    r = call("kv.get", "{\"key\":\"a\",\"ns\":\"plugin:other\"}");
    expect_err(r, "bad_request", "kv.get unknown arg");
    /* non-ASCII key round trip */
    r = call("kv.put", "{\"key\":\"caf\xc3\xa9\",\"value\":\"\\u00e9\\n\"}");
    expect_ok(r, "kv.put utf-8 key, escaped value");
    r = call("kv.get", "{\"key\":\"caf\\u00e9\"}");
    check(r->ok == 1 && strstr(r->text, "\"value\":\"\xc3\xa9\\n\""), "kv.get by escaped key", "%s", r->text);
}

static void kv_quota(void) {
    struct reply *r;
    out("== kv quota (8 MiB of keys plus values)\n");
    memset(big, 'q', 16384);
    big[16384] = 0;
    int i;
    for (i = 0; i < 700; i++) {
        snprintf(args, sizeof args, "{\"key\":\"quota/%04d\",\"value\":\"%s\"}", i, big);
        unsigned long long id = next_id++;
        /* do not print 700 16 KiB messages */
        snprintf(sendbuf, sizeof sendbuf, "{\"type\":\"call\",\"id\":%llu,\"op\":\"kv.put\",\"args\":%s}", id, args);
        send(chan, sendbuf, strlen(sendbuf), MSG_NOSIGNAL);
        wait_reply(id, &R, 10000);
        if (R.ok != 1)
            break;
    }
    r = &R;
    check(r->ok == 0 && !strcmp(r->code, "denied") && strstr(r->message, "quota"), "kv quota", "after %d puts: %s", i, r->text);
    /* clean up so later tests have room */
    for (int j = 0; j < i; j++) {
        snprintf(args, sizeof args, "{\"key\":\"quota/%04d\"}", j);
        unsigned long long id = next_id++;
        snprintf(sendbuf, sizeof sendbuf, "{\"type\":\"call\",\"id\":%llu,\"op\":\"kv.delete\",\"args\":%s}", id, args);
        send(chan, sendbuf, strlen(sendbuf), MSG_NOSIGNAL);
        wait_reply(id, &R, 10000);
    }
}

static void log_tests(void) {
    struct reply *r;
    out("== log.write\n");
    r = call("log.write", "{\"level\":\"info\",\"message\":\"docplugin says hi\",\"fields\":{\"n\":42,\"f\":1.5,\"ok\":true,\"s\":\"two words\"}}");
    expect_ok(r, "log.write with fields");
    r = call("log.write", "{\"level\":\"error\",\"message\":\"no fields\"}");
    expect_ok(r, "log.write without fields");
    r = call("log.write", "{\"level\":\"fatal\",\"message\":\"x\"}");
    expect_err(r, "bad_request", "log.write bad level");
    r = call("log.write", "{\"level\":\"info\",\"message\":\"x\",\"fields\":{\"Bad\":1}}");
    expect_err(r, "bad_request", "log.write upper-case field name");
    r = call("log.write", "{\"level\":\"info\",\"message\":\"x\",\"fields\":{\"o\":{\"a\":1}}}");
    expect_err(r, "bad_request", "log.write object field value");
    r = call("log.write", "{\"level\":\"info\",\"message\":\"x\",\"fields\":{\"o\":null}}");
    expect_err(r, "bad_request", "log.write null field value");
    strcpy(args, "{\"level\":\"info\",\"message\":\"x\",\"fields\":{");
    for (int i = 0; i < 17; i++)
        sprintf(args + strlen(args), "%s\"f%d\":%d", i ? "," : "", i, i);
    strcat(args, "}}");
    r = call("log.write", args);
    check(r->ok == 0, "log.write 17 fields refused", "%s", r->text);
    out("NOTE 17 fields answers %s\n", r->code);
    memset(big, 'm', 4097);
    big[4097] = 0;
    snprintf(args, sizeof args, "{\"level\":\"info\",\"message\":\"%s\"}", big);
    r = call("log.write", args);
    check(r->ok == 0, "log.write message 4097 bytes refused", "%s", r->text);
    out("NOTE message 4097 bytes answers %s\n", r->code);
    big[4096] = 0;
    snprintf(args, sizeof args, "{\"level\":\"info\",\"message\":\"%s\"}", big);
    expect_ok(call("log.write", args), "log.write message 4096 bytes");
    memset(big, 's', 1025);
    big[1025] = 0;
    snprintf(args, sizeof args, "{\"level\":\"info\",\"message\":\"x\",\"fields\":{\"s\":\"%s\"}}", big);
    r = call("log.write", args);
    check(r->ok == 0, "log.write field value 1025 bytes refused", "%s", r->text);
    out("NOTE field 1025 bytes answers %s\n", r->code);
    r = call("log.write", "{\"level\":\"info\",\"message\":\"line1\\nFAKE plugin=root level=error\"}");
    out("NOTE message with a newline answers %s\n", r->ok == 1 ? "ok" : r->code);
}

static void monitor_audit_tests(void) {
    struct reply *r;
    out("== monitor.stats / audit.query\n");
    r = call("monitor.stats", "{}");
    const char *want[] = {"host", "load", "mem_total_kb", "mem_available_kb", "uptime_s", "plugin", "calls", "allowed", "denied", "rate_limited", "errors", "bytes_in", "bytes_out"};
    int all = r->ok == 1;
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        if (!jval(r->text, want[i])) {
            all = 0;
            out("NOTE monitor.stats lacks %s\n", want[i]);
        }
    check(all, "monitor.stats fields", "%s", r->text);
    r = call("monitor.stats", NULL);
    expect_ok(r, "monitor.stats args omitted");
    r = call("monitor.stats", "{\"x\":1}");
    expect_err(r, "bad_request", "monitor.stats unknown arg");
    r = call("audit.query", "{\"limit\":3}");
    check(r->ok == 1 && jval(r->text, "events"), "audit.query", "%.600s", r->text);
    r = call("audit.query", "{}");
    expect_ok(r, "audit.query default limit");
    r = call("audit.query", "{\"limit\":0}");
    expect_err(r, "bad_request", "audit.query limit 0");
    r = call("audit.query", "{\"limit\":257}");
    expect_err(r, "bad_request", "audit.query limit 257");
    r = call("audit.query", "{\"limit\":256}");
    check(r->ok == 1 && r->text[0] && strlen(r->text) <= MAXMSG, "audit.query limit 256 fits", "%zu bytes", strlen(r->text));
}

static void fd_info(int fd, const char *what) {
    int fl = fcntl(fd, F_GETFL), fdf = fcntl(fd, F_GETFD);
    out("NOTE %s fd %d flags: %s%s%s%s cloexec=%d\n", what, fd, (fl & O_ACCMODE) == O_RDONLY ? "O_RDONLY" : (fl & O_ACCMODE) == O_WRONLY ? "O_WRONLY" : "O_RDWR", fl & O_APPEND ? "|O_APPEND" : "", fl & O_NONBLOCK ? "|O_NONBLOCK" : "", fl & O_TRUNC ? "|O_TRUNC" : "", !!(fdf & FD_CLOEXEC));
}

static void dial_tests(const char *port) {
    struct reply *r;
    out("== net.dial (port %s)\n", port);
    snprintf(args, sizeof args, "{\"host\":\"127.0.0.1\",\"port\":%s}", port);
    r = call("net.dial", args);
    check(r->ok == 1 && r->fd >= 0 && strstr(r->text, "\"fd\":true"), "net.dial ok with one fd", "%s", r->text);
    if (r->fd >= 0) {
        fd_info(r->fd, "net.dial");
        int fl = fcntl(r->fd, F_GETFL);
        check(!(fl & O_NONBLOCK), "net.dial fd blocking", "flags %x", fl);
        int ty = 0;
        socklen_t tl = sizeof ty;
        getsockopt(r->fd, SOL_SOCKET, SO_TYPE, &ty, &tl);
        check(ty == SOCK_STREAM, "net.dial SOCK_STREAM", "%d", ty);
        const char *hello = "ping-through-warden\n";
        write(r->fd, hello, strlen(hello));
        char b[64] = {0};
        ssize_t n = read(r->fd, b, sizeof b - 1);
        check(n > 0 && strncmp(b, hello, strlen(hello)) == 0, "net.dial echo", "read %zd: %s", n, b);
        close(r->fd);
    }
    snprintf(args, sizeof args, "{\"host\":\"127.0.0.1\",\"port\":%s,\"timeout_ms\":1000}", port);
    r = call("net.dial", args);
    check(r->ok == 1 && r->fd >= 0, "net.dial with timeout_ms", "%s", r->text);
    if (r->fd >= 0)
        close(r->fd);
    snprintf(args, sizeof args, "{\"host\":\"127.0.0.1\",\"port\":%s,\"timeout_ms\":0}", port);
    expect_err(call("net.dial", args), "bad_request", "net.dial timeout_ms 0");
    snprintf(args, sizeof args, "{\"host\":\"127.0.0.1\",\"port\":%s,\"timeout_ms\":999999}", port);
    expect_err(call("net.dial", args), "bad_request", "net.dial timeout_ms over call_timeout_ms");
    snprintf(args, sizeof args, "{\"host\":\"localhost\",\"port\":%s}", port);
    r = call("net.dial", args);
    expect_err(r, "denied", "net.dial name not in allow-list");
    check(strstr(r->message, "is not in the egress allow-list") != NULL, "net.dial allow-list message", "%s", r->message);
    r = call("net.dial", "{\"host\":\"127.0.0.1\",\"port\":1}");
    expect_err(r, "denied", "net.dial port not in allow-list");
    expect_err(call("net.dial", "{\"host\":\"127.1\",\"port\":80}"), "bad_request", "net.dial 127.1");
    expect_err(call("net.dial", "{\"host\":\"a/b\",\"port\":80}"), "bad_request", "net.dial a/b");
    expect_err(call("net.dial", "{\"host\":\"example.com\",\"port\":0}"), "bad_request", "net.dial port 0");
    expect_err(call("net.dial", "{\"host\":\"example.com\",\"port\":65536}"), "bad_request", "net.dial port 65536");
    expect_err(call("net.dial", "{\"host\":\"example.com.\",\"port\":443}"), "bad_request", "net.dial trailing dot");
    expect_err(call("net.dial", "{\"host\":\"example.123\",\"port\":443}"), "bad_request", "net.dial numeric last label");
    /* allowed pattern for 127.0.0.2 is in the policy with no allowance -> forbidden range */
    r = call("net.dial", "{\"host\":\"127.0.0.2\",\"port\":9}");
    expect_err(r, "denied", "net.dial forbidden address");
    check(strstr(r->message, "the policy does not allow it") != NULL, "net.dial forbidden message", "%s", r->message);
    /* allowed and allowance, nothing listening on port 9 -> unavailable */
    r = call("net.dial", "{\"host\":\"127.0.0.1\",\"port\":9}");
    expect_err(r, "unavailable", "net.dial refused");
}

static void fs_tests(void) {
    struct reply *r;
    out("== fs.open\n");
    r = call("fs.open", "{\"path\":\"a.txt\",\"flags\":[\"read\"]}");
    expect_err(r, "not_found", "fs.open missing read");
    r = call("fs.open", "{\"path\":\"a.txt\",\"flags\":[\"write\"]}");
    expect_err(r, "not_found", "fs.open missing write (no create)");
    r = call("fs.open", "{\"path\":\"a.txt\",\"flags\":[\"write\",\"create\"]}");
    check(r->ok == 1 && r->fd >= 0 && jnum(r->text, "size", -1) == 0, "fs.open write+create", "%s", r->text);
    if (r->fd >= 0) {
        fd_info(r->fd, "write,create");
        check(!(fcntl(r->fd, F_GETFL) & O_NONBLOCK), "fs.open fd blocking", "flags %x", fcntl(r->fd, F_GETFL));
        struct stat st;
        fstat(r->fd, &st);
        check((st.st_mode & 07777) == 0600, "fs.open new file mode 0600", "%o", st.st_mode & 07777);
        write(r->fd, "hello", 5);
        close(r->fd);
    }
    r = call("fs.open", "{\"path\":\"a.txt\",\"flags\":[\"read\"]}");
    check(r->ok == 1 && r->fd >= 0 && jnum(r->text, "size", -1) == 5, "fs.open read size 5", "%s", r->text);
    if (r->fd >= 0) {
        fd_info(r->fd, "read");
        char b[16] = {0};
        read(r->fd, b, 15);
        check(!strcmp(b, "hello"), "fs.open read content", "%s", b);
        check(write(r->fd, "x", 1) < 0, "fs.open read-only fd refuses write", "%s", strerror(errno));
        close(r->fd);
    }
    r = call("fs.open", "{\"path\":\"a.txt\",\"flags\":[\"write\",\"append\"]}");
    check(r->ok == 1 && r->fd >= 0, "fs.open write+append", "%s", r->text);
    if (r->fd >= 0) {
        fd_info(r->fd, "write,append");
        check(fcntl(r->fd, F_GETFL) & O_APPEND, "fs.open append sets O_APPEND", "");
        write(r->fd, "!", 1);
        close(r->fd);
    }
    r = call("fs.open", "{\"path\":\"a.txt\",\"flags\":[\"read\",\"write\"]}");
    check(r->ok == 1 && r->fd >= 0 && jnum(r->text, "size", -1) == 6, "fs.open read+write size 6", "%s", r->text);
    if (r->fd >= 0) {
        fd_info(r->fd, "read,write");
        close(r->fd);
    }
    r = call("fs.open", "{\"path\":\"a.txt\",\"flags\":[\"write\",\"truncate\"]}");
    check(r->ok == 1 && r->fd >= 0, "fs.open write+truncate", "%s", r->text);
    out("NOTE size reported for write+truncate of a 6-byte file: %lld\n", jnum(r->text, "size", -1));
    if (r->fd >= 0) {
        struct stat st;
        fstat(r->fd, &st);
        check(st.st_size == 0, "fs.open truncate empties", "%lld", (long long)st.st_size);
        close(r->fd);
    }
    r = call("fs.open", "{\"path\":\"b.txt\",\"flags\":[\"read\",\"write\",\"create\",\"truncate\",\"append\"]}");
    check(r->ok == 1 && r->fd >= 0, "fs.open all five flags", "%s", r->text);
    if (r->fd >= 0) {
        fd_info(r->fd, "all five");
        close(r->fd);
    }
    r = call("fs.open", "{\"path\":\"c.txt\",\"flags\":[\"create\",\"write\"]}");
    check(r->ok == 1 && r->fd >= 0, "fs.open flags in another order", "%s", r->text);
    if (r->fd >= 0)
        close(r->fd);
    expect_err(call("fs.open", "{\"path\":\"a.txt\",\"flags\":[]}"), "bad_request", "fs.open no flags");
    expect_err(call("fs.open", "{\"path\":\"a.txt\",\"flags\":[\"create\"]}"), "bad_request", "fs.open create alone");
    expect_err(call("fs.open", "{\"path\":\"a.txt\",\"flags\":[\"read\",\"create\"]}"), "bad_request", "fs.open read+create");
    expect_err(call("fs.open", "{\"path\":\"a.txt\",\"flags\":[\"read\",\"truncate\"]}"), "bad_request", "fs.open read+truncate");
    expect_err(call("fs.open", "{\"path\":\"a.txt\",\"flags\":[\"read\",\"append\"]}"), "bad_request", "fs.open read+append");
    expect_err(call("fs.open", "{\"path\":\"a.txt\",\"flags\":[\"read\",\"read\"]}"), "bad_request", "fs.open duplicate flag");
    expect_err(call("fs.open", "{\"path\":\"a.txt\",\"flags\":[\"exec\"]}"), "bad_request", "fs.open unknown flag");
    expect_err(call("fs.open", "{\"path\":\"a.txt\"}"), "bad_request", "fs.open flags missing");
    expect_err(call("fs.open", "{\"path\":\"../x\",\"flags\":[\"read\"]}"), "denied", "fs.open ..");
    expect_err(call("fs.open", "{\"path\":\"/etc/passwd\",\"flags\":[\"read\"]}"), "denied", "fs.open absolute");
    expect_err(call("fs.open", "{\"path\":\"a//b\",\"flags\":[\"read\"]}"), "bad_request", "fs.open empty component");
    expect_err(call("fs.open", "{\"path\":\"./a.txt\",\"flags\":[\"read\"]}"), "bad_request", "fs.open . component");
    expect_err(call("fs.open", "{\"path\":\"\",\"flags\":[\"read\"]}"), "bad_request", "fs.open empty path");
    expect_err(call("fs.open", "{\"path\":\"a.txt/\",\"flags\":[\"read\"]}"), "bad_request", "fs.open trailing slash");
    expect_err(call("fs.open", "{\"path\":\"nodir/x\",\"flags\":[\"write\",\"create\"]}"), "not_found", "fs.open missing parent");
    memset(big, 'p', 1025);
    big[1025] = 0;
    snprintf(args, sizeof args, "{\"path\":\"%s\",\"flags\":[\"read\"]}", big);
    r = call("fs.open", args);
    check(r->ok == 0, "fs.open path 1025 bytes refused", "%s", r->text);
    out("NOTE path 1025 bytes answers %s\n", r->code);
    r = call("fs.open", "{\"path\":\"sub\",\"flags\":[\"read\"]}");
    out("NOTE fs.open of operator-made directory 'sub' answers %s: %s\n", r->ok == 1 ? "ok" : r->code, r->message);
    r = call("fs.open", "{\"path\":\"link\",\"flags\":[\"read\"]}");
    out("NOTE fs.open of operator-made symlink 'link' answers %s: %s\n", r->ok == 1 ? "ok" : r->code, r->message);
    r = call("fs.open", "{\"path\":\"fifo\",\"flags\":[\"read\"]}");
    out("NOTE fs.open of operator-made fifo answers %s: %s\n", r->ok == 1 ? "ok" : r->code, r->message);
    r = call("fs.open", "{\"path\":\"sub/inner.txt\",\"flags\":[\"write\",\"create\"]}");
    out("NOTE fs.open in operator-made subdirectory 'sub' answers %s\n", r->ok == 1 ? "ok" : r->code);
    if (r->fd >= 0)
        close(r->fd);
}

static void error_tests(void) {
    struct reply *r;
    out("== errors\n");
    r = call("foo.bar", "{}");
    expect_err(r, "unknown_op", "unknown op");
    char longop[200];
    memset(longop, 'x', 150);
    memcpy(longop, "op.", 3);
    longop[150] = 0;
    r = call(longop, "{}");
    expect_err(r, "unknown_op", "unknown long op");
    {
        /* the quoted name must be cut to 64 bytes */
        char run[100];
        memset(run, 'x', 65);
        run[65] = 0;
        check(strstr(r->message, run) == NULL, "unknown op name cut to 64 bytes", "%s", r->message);
    }
    r = call("node.info", "{}");
    expect_err(r, "denied", "undeclared capability");
    r = call("notify.send", "{\"to\":\"x\",\"text\":\"y\"}");
    expect_err(r, "unavailable", "no provider (notify.send)");
    r = call("notify.send", "{}");
    expect_err(r, "unavailable", "no provider (notify.send, {})");
    /* bad_request variants */
    unsigned long long id = next_id++;
    snprintf(big, sizeof big, "{\"type\":\"call\",\"id\":%llu,\"op\":\"kv.get\",\"args\":{\"key\":\"runs\"},\"extra\":1}", id);
    expect_err(call_raw(id, big), "bad_request", "call unknown field");
    id = next_id++;
    snprintf(big, sizeof big, "{\"type\":\"call\",\"id\":%llu,\"op\":\"kv.get\",\"args\":[1]}", id);
    expect_err(call_raw(id, big), "bad_request", "args not an object");
    id = next_id++;
    snprintf(big, sizeof big, "{\"type\":\"call\",\"id\":%llu,\"op\":\"kv.get\",\"args\":null}", id);
    r = call_raw(id, big);
    out("NOTE args:null answers %s\n", r->ok == 1 ? "ok" : r->ok == 0 ? r->code : r->text);
    id = next_id++;
    snprintf(big, sizeof big, "{\"type\":\"call\",\"id\":%llu,\"args\":{}}", id);
    r = call_raw(id, big);
    check(r->ok == 0 && !strcmp(r->code, "bad_request"), "call without op", "%s", r->text);
    id = next_id++;
    snprintf(big, sizeof big, "{\"type\":\"call\",\"id\":%llu,\"op\":7}", id);
    r = call_raw(id, big);
    check(r->ok == 0 && !strcmp(r->code, "bad_request"), "op not a string", "%s", r->text);
    send_str("{\"type\":\"call\",\"id\":18446744073709551615,\"op\":\"kv.get\",\"args\":{\"key\":\"runs\"}}");
    r = &R;
    wait_reply(18446744073709551615ULL, r, 1500);
    check(r->ok == 1, "id u64::MAX", "%s", r->text);
    id = next_id++;
    snprintf(big, sizeof big, "{\"type\":\"call\",\"id\":%llu,\"op\":\"kv.get\",\"args\":{\"key\":\"runs\"},\"seq\":5}", id);
    r = call_raw(id, big);
    expect_err(r, "bad_request", "call with a pong's field seq");
    id = next_id++;
    snprintf(big, sizeof big, "{\"type\":\"call\",\"id\":%llu,\"op\":\"kv.get\",\"args\":{\"key\":\"runs\"},\"versions\":[1],\"plugin\":\"x\"}", id);
    r = call_raw(id, big);
    expect_err(r, "bad_request", "call with hello's fields");
    /* the fast path and the general decoder must agree */
    id = next_id++;
    snprintf(big, sizeof big, "{\"type\":\"call\",\"id\":%llu,\"op\":\"kv.get\",\"args\":{\"key\":\"runs\",\"key\":\"zzz\"}}", id);
    struct reply a;
    call_raw(id, big);
    a = R;
    id = next_id++;
    snprintf(big, sizeof big, "{ \"type\":\"call\",\"id\":%llu,\"op\":\"kv.get\",\"args\":{\"key\":\"runs\",\"key\":\"zzz\"}}", id);
    call_raw(id, big);
    check(a.ok == R.ok && !strcmp(a.code, R.code), "duplicate arg key: fast path == general path", "fast: %s | general: %s", a.text, R.text);
    id = next_id++;
    snprintf(big, sizeof big, "{\"type\":\"call\",\"id\":%llu,\"op\":\"kv.get\",\"args\":{\"key\":\"runs\"}}\n", id);
    r = call_raw(id, big);
    check(r->ok == 1, "trailing newline (JSON whitespace) accepted", "%s", r->text);
    id = next_id++;
    snprintf(big, sizeof big, "{\"args\":{\"key\":\"runs\"},\"op\":\"kv.get\",\"id\":%llu,\"type\":\"call\"}", id);
    r = call_raw(id, big);
    check(r->ok == 1, "fields in another order", "%s", r->text);
    /* A field said twice is a framing violation (docs/protocol.md): not sent here. */
    /* duplicate id in flight: two puts with the same id back to back */
    id = next_id++;
    snprintf(big, sizeof big, "{\"type\":\"call\",\"id\":%llu,\"op\":\"kv.put\",\"args\":{\"key\":\"dup\",\"value\":\"1\"}}", id);
    send_str(big);
    send_str(big);
    struct reply r1, r2;
    wait_reply(id, &r1, 5000);
    wait_reply(id, &r2, 5000);
    check((r1.ok == 1 && r2.ok == 0 && !strcmp(r2.code, "bad_request")) || (r2.ok == 1 && r1.ok == 0 && !strcmp(r1.code, "bad_request")), "duplicate id in flight", "%s | %s", r1.text, r2.text);
    /* too large: 70000 bytes, no id, channel stays open */
    memset(big, ' ', 70000);
    memcpy(big, "{\"type\":\"call\",\"id\":1,\"op\":\"kv.get\"", 35);
    big[69999] = '}';
    send(chan, big, 70000, MSG_NOSIGNAL);
    out("SEND <70000-byte call>\n");
    last_error[0] = 0;
    id = next_id++;
    send_call(id, "kv.get", "{\"key\":\"runs\"}");
    r = &R;
    if (wait_reply(id, r, 5000) < 0) /* the id-less too_large error came first */
        wait_reply(id, r, 5000);
    check(strstr(last_error, "too_large") && !strstr(last_error, "\"id\""), "too_large error without id", "%s", last_error);
    check(r->ok == 1, "channel open after too_large", "%s", r->text);
    /* exactly 65536 bytes is allowed */
    id = next_id++;
    snprintf(big, sizeof big, "{\"type\":\"call\",\"id\":%llu,\"op\":\"kv.get\",\"args\":{\"key\":\"runs\"}", id);
    size_t l = strlen(big);
    memset(big + l, ' ', 65535 - l);
    big[65535] = '}';
    send(chan, big, 65536, MSG_NOSIGNAL);
    out("SEND <65536-byte call id %llu>\n", id);
    wait_reply(id, &R, 5000);
    check(R.ok == 1, "65536-byte call accepted", "%s", R.text);
    /* a pong nobody asked for */
    send_str("{\"type\":\"pong\",\"seq\":12345}");
    r = call("kv.get", "{\"key\":\"runs\"}");
    check(r->ok == 1, "unsolicited pong tolerated", "%s (last error %s)", r->text, last_error);
    /* several calls in flight, answered in any order */
    unsigned long long ids[8];
    for (int i = 0; i < 8; i++) {
        ids[i] = next_id++;
        if (i % 2)
            send_call(ids[i], "kv.put", "{\"key\":\"inflight\",\"value\":\"v\"}");
        else
            send_call(ids[i], "kv.get", "{\"key\":\"runs\"}");
    }
    int okc = 0;
    for (int i = 7; i >= 0; i--) {
        wait_reply(ids[i], &R, 5000);
        okc += R.ok == 1;
    }
    check(okc == 8, "8 calls in flight", "%d ok", okc);
    /* id reuse after its reply came */
    id = ids[0];
    snprintf(big, sizeof big, "{\"type\":\"call\",\"id\":%llu,\"op\":\"kv.get\",\"args\":{\"key\":\"runs\"}}", id);
    check(call_raw(id, big)->ok == 1, "id free again after its reply", "%s", R.text);
}

static void rate_tests(void) {
    out("== rate limits (policy: monitor:read 1/s burst 2)\n");
    int limited = 0;
    for (int i = 0; i < 5; i++) {
        struct reply *r = call("monitor.stats", "{}");
        if (r->ok == 0 && !strcmp(r->code, "rate_limited"))
            limited++;
    }
    check(limited >= 2, "rate_limited", "%d of 5 limited", limited);
}

static void flood(void) {
    out("== flood: 40 kv.put at once\n");
    unsigned long long ids[40];
    for (int i = 0; i < 40; i++) {
        ids[i] = next_id++;
        snprintf(sendbuf, sizeof sendbuf, "{\"type\":\"call\",\"id\":%llu,\"op\":\"kv.put\",\"args\":{\"key\":\"f%d\",\"value\":\"v\"}}", ids[i], i);
        send(chan, sendbuf, strlen(sendbuf), MSG_NOSIGNAL);
    }
    int ok = 0, rl = 0, other = 0;
    for (int i = 0; i < 40; i++) {
        wait_reply(ids[i], &R, 10000);
        if (R.ok == 1)
            ok++;
        else if (!strcmp(R.code, "rate_limited")) {
            if (!rl)
                out("NOTE in-flight refusal: %s\n", R.text);
            rl++;
        } else
            other++;
    }
    check(rl > 0 && ok >= 32, "max_in_flight 32", "ok %d rate_limited %d other %d", ok, rl, other);
}

static void frame(const char *kind) {
    int pre_hello = !strcmp(kind, "call-before-hello") || !strncmp(kind, "hello-", 6);
    if (!pre_hello && handshake() < 0) {
        check(0, "handshake", "failed");
        return;
    }
    char h[256];
    if (!strcmp(kind, "not-utf8"))
        send_raw("{\"type\":\"pong\",\"seq\":1,\"x\":\"\xff\xfe\"}", 33);
    else if (!strcmp(kind, "not-json"))
        send_str("this is not json");
    else if (!strcmp(kind, "not-object"))
        send_str("[1,2,3]");
    else if (!strcmp(kind, "no-type"))
        send_str("{\"id\":1,\"op\":\"kv.get\"}");
    else if (!strcmp(kind, "bad-type"))
        send_str("{\"type\":\"frobnicate\"}");
    else if (!strcmp(kind, "type-not-string"))
        send_str("{\"type\":7}");
    else if (!strcmp(kind, "empty"))
        send_raw("", 0);
    else if (!strcmp(kind, "call-before-hello"))
        send_str("{\"type\":\"call\",\"id\":1,\"op\":\"kv.get\",\"args\":{\"key\":\"a\"}}");
    else if (!strcmp(kind, "second-hello")) {
        snprintf(h, sizeof h, "{\"type\":\"hello\",\"versions\":[1],\"plugin\":\"%s\",\"version\":\"%s\"}", ID, VERSION);
        send_str(h);
    } else if (!strcmp(kind, "hello-wrong-id"))
        send_str("{\"type\":\"hello\",\"versions\":[1],\"plugin\":\"someone-else\",\"version\":\"1.0.0\"}");
    else if (!strcmp(kind, "hello-wrong-version")) {
        snprintf(h, sizeof h, "{\"type\":\"hello\",\"versions\":[1],\"plugin\":\"%s\",\"version\":\"9.9.9\"}", ID);
        send_str(h);
    } else if (!strcmp(kind, "hello-no-version")) {
        snprintf(h, sizeof h, "{\"type\":\"hello\",\"versions\":[2,3],\"plugin\":\"%s\",\"version\":\"%s\"}", ID, VERSION);
        send_str(h);
    } else if (!strcmp(kind, "hello-unknown-field")) {
        snprintf(h, sizeof h, "{\"type\":\"hello\",\"versions\":[1],\"plugin\":\"%s\",\"version\":\"%s\",\"sdk\":\"c\"}", ID, VERSION);
        send_str(h);
    } else if (!strcmp(kind, "hello-versions-2-1")) {
        snprintf(h, sizeof h, "{\"type\":\"hello\",\"versions\":[2,1],\"plugin\":\"%s\",\"version\":\"%s\"}", ID, VERSION);
        send_str(h);
    } else if (!strcmp(kind, "hello-too-large")) {
        memset(big, ' ', 70000);
        memcpy(big, "{\"type\":\"hello\"", 15);
        big[69999] = '}';
        send(chan, big, 70000, MSG_NOSIGNAL);
        out("SEND <70000-byte hello>\n");
    } else if (!strcmp(kind, "id-string"))
        send_str("{\"type\":\"call\",\"id\":\"x\",\"op\":\"kv.get\",\"args\":{\"key\":\"runs\"}}");
    else if (!strcmp(kind, "id-negative"))
        send_str("{\"type\":\"call\",\"id\":-1,\"op\":\"kv.get\",\"args\":{\"key\":\"runs\"}}");
    else if (!strcmp(kind, "id-missing"))
        send_str("{\"type\":\"call\",\"op\":\"kv.get\",\"args\":{\"key\":\"runs\"}}");
    else if (!strcmp(kind, "id-2e64"))
        send_str("{\"type\":\"call\",\"id\":18446744073709551616,\"op\":\"kv.get\",\"args\":{\"key\":\"runs\"}}");
    else if (!strcmp(kind, "id-float"))
        send_str("{\"type\":\"call\",\"id\":1.0,\"op\":\"kv.get\",\"args\":{\"key\":\"runs\"}}");
    else if (!strcmp(kind, "trailing-garbage"))
        send_str("{\"type\":\"call\",\"id\":1,\"op\":\"kv.get\",\"args\":{\"key\":\"runs\"}}garbage");
    else if (!strcmp(kind, "two-objects"))
        send_str("{\"type\":\"call\",\"id\":1,\"op\":\"kv.get\",\"args\":{\"key\":\"runs\"}}{\"type\":\"pong\",\"seq\":1}");
    else if (!strcmp(kind, "pong-bad")) {
        send_str("{\"type\":\"pong\",\"seq\":\"x\"}");
    } else if (!strcmp(kind, "welcome-from-plugin")) {
        send_str("{\"type\":\"welcome\",\"version\":1}");
    } else if (!strcmp(kind, "send-fd")) {
        const char *m = "{\"type\":\"call\",\"id\":1,\"op\":\"kv.get\",\"args\":{\"key\":\"a\"}}";
        union {
            char b[CMSG_SPACE(sizeof(int))];
            struct cmsghdr a;
        } ctl;
        struct iovec iov = {(void *)m, strlen(m)};
        struct msghdr mh = {0};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = ctl.b;
        mh.msg_controllen = sizeof ctl.b;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        int zero = 0;
        memcpy(CMSG_DATA(c), &zero, sizeof zero);
        show("SEND(+fd 0)", m, strlen(m), -1);
        if (sendmsg(chan, &mh, MSG_NOSIGNAL) < 0)
            out("sendmsg: %s\n", strerror(errno));
    } else {
        out("unknown frame kind %s\n", kind);
        return;
    }
    int closed = channel_closed(3000);
    out("FRAME %s: closed=%d\n", kind, closed);
}

static void wait_mode(int idle_ms) {
    if (handshake() < 0)
        return;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        ssize_t n = recv_one(&M, idle_ms);
        if (n <= 0) {
            out("WAIT channel %s after %d pings answered\n", n == 0 ? "closed" : "idle", pings_answered);
            return;
        }
        handle_other(&M);
        if (shutdown_ms >= 0) {
            out("WAIT shutdown deadline_ms=%d after %d pings answered; exiting 0\n", shutdown_ms, pings_answered);
            exit(0);
        }
    }
}

static void on_term(int s) {
    char b[64];
    int n = snprintf(b, sizeof b, "SIGNAL %d received\n", s);
    write(1, b, n);
    _exit(0);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGTERM, on_term);
    const char *e = getenv("WARDEN_FD");
    ID = getenv("WARDEN_PLUGIN_ID");
    if (!e || !ID) {
        fprintf(stderr, "docplugin: WARDEN_FD or WARDEN_PLUGIN_ID missing\n");
        return 2;
    }
    chan = atoi(e);
    int ty = 0;
    socklen_t tl = sizeof ty;
    getsockopt(chan, SOL_SOCKET, SO_TYPE, &ty, &tl);
    check(ty == SOCK_SEQPACKET, "fd is SOCK_SEQPACKET", "WARDEN_FD=%s type %d", e, ty);
    const char *mode = argc > 1 ? argv[1] : "main";
    if (!strncmp(mode, "frame:", 6)) {
        frame(mode + 6);
        return 0;
    }
    if (!strcmp(mode, "wait")) {
        wait_mode(argc > 2 ? atoi(argv[2]) : 60000);
        return 0;
    }
    if (handshake() < 0)
        return 3;
    if (!strcmp(mode, "flood"))
        flood();
    else if (!strcmp(mode, "bigkeys")) {
        /* 300 keys of 256 bytes that double when JSON-escaped, then one kv.list */
        int fillc = argc > 2 ? argv[2][0] : '\\';
        for (int i = 0; i < 300; i++) {
            char key[300];
            memset(key, fillc, 248);
            sprintf(key + 248, "%06d", i);
            char *esc = big, *q = esc;
            for (char *k = key; *k; k++) {
                if (*k == '\\' || *k == '"')
                    *q++ = '\\';
                *q++ = *k;
            }
            *q = 0;
            unsigned long long id = next_id++;
            snprintf(sendbuf, sizeof sendbuf, "{\"type\":\"call\",\"id\":%llu,\"op\":\"kv.put\",\"args\":{\"key\":\"bk%s\",\"value\":\"v\"}}", id, esc);
            send(chan, sendbuf, strlen(sendbuf), MSG_NOSIGNAL);
            wait_reply(id, &R, 5000);
            if (R.ok != 1) {
                out("put %d: %s\n", i, R.text);
                break;
            }
        }
        unsigned long long id = next_id++;
        snprintf(sendbuf, sizeof sendbuf, "{\"type\":\"call\",\"id\":%llu,\"op\":\"kv.list\",\"args\":{\"prefix\":\"bk\",\"limit\":1000}}", id);
        send_str(sendbuf);
        recv_one(&M, 5000);
        out("LIST reply %zd bytes, MSG_TRUNC would be noted above; cursor null: %d\n", M.len, strstr(M.buf, "\"cursor\":null") != NULL);
        for (int i = 0; i < 300; i++) {
            char key[300];
            memset(key, fillc, 248);
            sprintf(key + 248, "%06d", i);
            char *q = big;
            for (char *k = key; *k; k++) {
                if (*k == '\\' || *k == '"')
                    *q++ = '\\';
                *q++ = *k;
            }
            *q = 0;
            unsigned long long id = next_id++;
            snprintf(sendbuf, sizeof sendbuf, "{\"type\":\"call\",\"id\":%llu,\"op\":\"kv.delete\",\"args\":{\"key\":\"bk%s\"}}", id, big);
            send(chan, sendbuf, strlen(sendbuf), MSG_NOSIGNAL);
            wait_reply(id, &R, 5000);
        }
    } else if (!strcmp(mode, "raw")) {
        /* raw MSG...: sends each message as given, prints what comes back within 1 s */
        for (int i = 2; i < argc; i++) {
            send_str(argv[i]);
            while (recv_one(&M, 1000) > 0)
                handle_other(&M);
        }
    } else if (!strcmp(mode, "calls")) {
        /* calls OP ARGS [OP ARGS...]: one call each, in turn; prints "OP ok|err ..." */
        for (int i = 2; i + 1 < argc; i += 2) {
            struct reply *r = call(argv[i], argv[i + 1]);
            out("%s %s %s\n", argv[i], r->ok == 1 ? "ok" : r->ok == 0 ? "err" : "none", r->text);
            if (r->fd >= 0)
                close(r->fd);
        }
    }
    else if (!strcmp(mode, "rate"))
        rate_tests();
    else if (!strcmp(mode, "quota"))
        kv_quota();
    else {
        kv_tests();
        log_tests();
        monitor_audit_tests();
        if (argc > 2)
            dial_tests(argv[2]);
        fs_tests();
        error_tests();
    }
    out("SUMMARY %d passed, %d failed, %d pings answered\n", passes, fails, pings_answered);
    return fails ? 1 : 0;
}
