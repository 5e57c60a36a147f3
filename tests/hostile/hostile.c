/*
 * hostile.c -- warden's hostile plugin.
 *
 * One program, many escape attempts.  Usage:
 *
 *     hostile ATTEMPT [PARAMS...]
 *     hostile list                 (one line per attempt: name, kind, params)
 *
 * Each attempt makes ONE real escape attempt -- the same call an attacker
 * would make, one that succeeds for an unconfined root process on a normal
 * host -- and prints exactly one line on stdout:
 *
 *     BLOCKED <name>: <what happened, e.g. the errno name>     exit 0
 *     ESCAPED <name>: <evidence>                               exit 1
 *
 * Other exits: 2 = usage error (unknown attempt / missing parameter),
 * 3 = "SKIPPED <name>: ..." -- a destructive attempt refused to run because
 * it is not inside a warden sandbox (see require_sandbox()).  A harness
 * must treat 2 and 3 as failures, never as "blocked".
 *
 * A seccomp filter whose default action kills shows up as death by SIGSYS
 * (no line printed); the cgroup OOM killer as death by SIGKILL.  Which
 * attempts may legitimately end that way is documented in docs/SECURITY.md
 * and encoded in tests/hostile.rs.
 *
 * Destructive attempts (reboot, kexec_load, init_module, finit_module,
 * delete_module, kill_all, fork_bomb, mem_bomb, swapon, sysrq, core_pattern,
 * clock_settime, sethostname) only run when WARDEN_FD=3 is set AND the
 * process is in a non-initial pid, user and uts namespace; the unconfined
 * self-check (scripts/hostile-selfcheck.sh) therefore never runs them.
 * Even so, each is written to do as little harm as possible if it ever
 * succeeded: privilege probes with invalid arguments whose permission check
 * comes first in the kernel, or writing back the value that is already set.
 *
 * Build: cc -O1 -Wall -o hostile hostile.c   (glibc >= 2.32 for strerrorname_np)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <linux/perf_event.h>
#include <linux/reboot.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char *g_name = "?";
static int g_argc;
static char **g_argv; /* the attempt's parameters (after the name) */

/* Initial-namespace inode numbers (include/linux/proc_ns.h). */
#define PROC_USER_INIT_INO 0xEFFFFFFDU
#define PROC_UTS_INIT_INO 0xEFFFFFFEU
#define PROC_PID_INIT_INO 0xEFFFFFFCU

static const char *ename(int e)
{
    const char *n = strerrorname_np(e);
    return n ? n : "E?";
}
#define E ename(errno)

static void finish(int escaped, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
static void finish(int escaped, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* keep it one line whatever the evidence contained */
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    printf("%s %s: %s\n", escaped ? "ESCAPED" : "BLOCKED", g_name, msg);
    fflush(stdout);
    _exit(escaped ? 1 : 0);
}
#define BLOCKED(...) finish(0, __VA_ARGS__)
#define ESCAPED(...) finish(1, __VA_ARGS__)

/* Accumulates "what happened" for attempts that try several things. */
static char g_log[768];
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    size_t len = strlen(g_log);
    if (len + 4 >= sizeof g_log)
        return;
    if (len) {
        strcat(g_log, "; ");
        len += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_log + len, sizeof g_log - len, fmt, ap);
    va_end(ap);
}

static const char *param(int i, const char *dflt)
{
    return i < g_argc ? g_argv[i] : dflt;
}

static const char *need(int i, const char *what)
{
    if (i >= g_argc) {
        printf("USAGE %s: missing parameter %s\n", g_name, what);
        fflush(stdout);
        _exit(2);
    }
    return g_argv[i];
}

static const char *tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    return (t && *t) ? t : "/tmp";
}

static unsigned long ns_ino(const char *ns)
{
    char p[64];
    struct stat st;
    snprintf(p, sizeof p, "/proc/self/ns/%s", ns);
    if (stat(p, &st) != 0)
        return 0;
    return (unsigned long)st.st_ino;
}

/* Destructive attempts run only inside a warden sandbox. */
static void require_sandbox(void)
{
    const char *fd = getenv("WARDEN_FD");
    unsigned long pid = ns_ino("pid"), user = ns_ino("user"), uts = ns_ino("uts");
    if (!fd || strcmp(fd, "3") != 0 || pid == 0 || pid == PROC_PID_INIT_INO ||
        user == 0 || user == PROC_USER_INIT_INO || uts == 0 || uts == PROC_UTS_INIT_INO) {
        printf("SKIPPED %s: destructive attempt refused outside a warden sandbox "
               "(WARDEN_FD=%s, pid ns %#lx, user ns %#lx, uts ns %#lx)\n",
               g_name, fd ? fd : "unset", pid, user, uts);
        fflush(stdout);
        _exit(3);
    }
}

static ssize_t read_small(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t r = read(fd, buf, n - 1);
    int e = errno;
    close(fd);
    errno = e;
    if (r >= 0)
        buf[r] = 0;
    return r;
}

/* -------------------------------------------------------------- files */

static void a_read_shadow(void)
{
    char buf[256];
    ssize_t n = read_small("/etc/shadow", buf, sizeof buf);
    if (n < 0)
        BLOCKED("read /etc/shadow: %s", E);
    if (n == 0)
        BLOCKED("/etc/shadow is empty (not the host's)");
    ESCAPED("read %zd bytes of /etc/shadow", n);
}

static void list_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        BLOCKED("opendir %s: %s", path, E);
    struct dirent *de;
    int n = 0;
    char first[NAME_MAX + 1] = "";
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (!n++)
            snprintf(first, sizeof first, "%s", de->d_name);
    }
    closedir(d);
    if (n == 0)
        BLOCKED("%s exists but is empty (not the host's)", path);
    ESCAPED("listed %d entries in %s, e.g. %s", n, path, first);
}

static void a_read_root(void) { list_dir("/root"); }
static void a_read_home(void) { list_dir("/home"); }

static void a_read_hostfile(void)
{
    const char *path = need(0, "PATH");
    const char *marker = param(1, NULL);
    char buf[4096];
    ssize_t n = read_small(path, buf, sizeof buf);
    if (n < 0)
        BLOCKED("read %s: %s", path, E);
    if (marker && !strstr(buf, marker))
        BLOCKED("%s readable here but lacks the host's marker (a different file)", path);
    ESCAPED("read %zd bytes of host file %s%s", n, path, marker ? " including the marker" : "");
}

/* Creates a file in DIR, and opens an existing file in it for writing. */
static void write_into(const char *dir, const char *existing)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/.hostile-write-probe-%d", dir, (int)getpid());
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        ssize_t w = write(fd, "x", 1);
        close(fd);
        unlink(p);
        ESCAPED("created %s (write returned %zd)", p, w);
    }
    note("create %s: %s", p, E);
    if (existing) {
        /* O_APPEND and no write(): success alone proves write access. */
        fd = open(existing, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fd >= 0) {
            close(fd);
            ESCAPED("opened %s for writing", existing);
        }
        note("open %s O_WRONLY: %s", existing, E);
    }
    BLOCKED("%s", g_log);
}

static void a_write_root(void) { write_into("/", NULL); }
static void a_write_usr(void) { write_into("/usr", "/usr/bin/env"); }
static void a_write_etc(void) { write_into("/etc", "/etc/passwd"); }
static void a_write_bundle(void)
{
    const char *dir = param(0, "/bundle");
    char m[PATH_MAX];
    snprintf(m, sizeof m, "%s/manifest.json", dir);
    write_into(dir, m);
}

static void a_write_exe(void)
{
    char paths[3][64];
    snprintf(paths[0], 64, "/proc/self/exe");
    snprintf(paths[1], 64, "/proc/1/exe");
    snprintf(paths[2], 64, "/proc/%d/exe", (int)getppid());
    for (int i = 0; i < 3; i++) {
        const char *p = paths[i];
        unsigned char b = 0x7f; /* ELF magic: what is there already */
        int r = open(p, O_RDONLY | O_CLOEXEC);
        if (r >= 0) {
            if (pread(r, &b, 1, 0) != 1)
                b = 0x7f;
            close(r);
        }
        const int modes[2] = {O_WRONLY, O_RDWR};
        for (int m = 0; m < 2; m++) {
            int fd = open(p, modes[m] | O_CLOEXEC);
            if (fd < 0) {
                note("%s %s: %s", p, m ? "O_RDWR" : "O_WRONLY", E);
                continue;
            }
            /* Writes back the byte that is already there. */
            ssize_t w = pwrite(fd, &b, 1, 0);
            int e = errno;
            close(fd);
            if (w == 1)
                ESCAPED("opened %s %s and wrote to it", p, m ? "O_RDWR" : "O_WRONLY");
            note("%s %s opened, pwrite: %s", p, m ? "O_RDWR" : "O_WRONLY", ename(e));
        }
    }
    BLOCKED("%s", g_log);
}

static void a_proc_kcore(void)
{
    char buf[64];
    int fd = open("/proc/kcore", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        BLOCKED("open /proc/kcore: %s", E);
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0)
        BLOCKED("read /proc/kcore: %s", n < 0 ? E : "EOF");
    ESCAPED("read %zd bytes of /proc/kcore (%s)", n, memcmp(buf, "\177ELF", 4) ? "data" : "ELF header");
}

static void a_proc1_root(void)
{
    char p[PATH_MAX], buf[256];
    struct stat mine, theirs;
    int pids[2] = {1, (int)getppid()};
    if (stat("/", &mine) != 0)
        BLOCKED("stat /: %s", E);
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "/proc/%d/root/etc/shadow", pids[i]);
        if (read_small(p, buf, sizeof buf) > 0)
            ESCAPED("read %s", p);
        note("%s: %s", p, E);
        snprintf(p, sizeof p, "/proc/%d/root/", pids[i]);
        if (stat(p, &theirs) != 0) {
            note("stat %s: %s", p, E);
            continue;
        }
        if (theirs.st_dev != mine.st_dev || theirs.st_ino != mine.st_ino)
            ESCAPED("%s is a different root (dev %lu ino %lu) than ours: a way out", p,
                    (unsigned long)theirs.st_dev, (unsigned long)theirs.st_ino);
        note("%s is our own root", p);
    }
    BLOCKED("%s", g_log);
}

/* The "shocker" escape: open_by_handle_at on a filesystem bound from the host. */
static void a_open_by_handle(void)
{
    const char *mps[3] = {"/usr", "/etc", "/"};
    for (int i = 0; i < 3; i++) {
        int mfd = open(mps[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (mfd < 0) {
            note("open %s: %s", mps[i], E);
            continue;
        }
        struct {
            struct file_handle h;
            unsigned char data[MAX_HANDLE_SZ];
        } fh;
        fh.h.handle_bytes = MAX_HANDLE_SZ;
        int mnt;
        if (name_to_handle_at(AT_FDCWD, mps[i], &fh.h, &mnt, 0) == 0) {
            int fd = open_by_handle_at(mfd, &fh.h, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (fd >= 0)
                ESCAPED("open_by_handle_at reopened %s from its handle", mps[i]);
            note("%s handle: open_by_handle_at %s", mps[i], E);
        } else {
            note("name_to_handle_at %s: %s", mps[i], E);
        }
        /* Brute-force style handle: inode 2 (ext* root), generation 0. */
        fh.h.handle_bytes = 8;
        fh.h.handle_type = 1; /* FILEID_INO32_GEN */
        uint32_t ino_gen[2] = {2, 0};
        memcpy(fh.h.f_handle, ino_gen, 8);
        int fd = open_by_handle_at(mfd, &fh.h, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
            DIR *d = fdopendir(fd);
            struct dirent *de;
            int n = 0;
            while (d && (de = readdir(d)))
                n++;
            ESCAPED("open_by_handle_at opened inode 2 (the fs root) under %s: %d entries", mps[i], n);
        }
        note("%s inode-2 handle: %s", mps[i], E);
        close(mfd);
    }
    BLOCKED("%s", g_log);
}

/* ---------------------------------------------------------- processes */

static void a_proc_count(void)
{
    int max = atoi(param(0, "4"));
    DIR *d = opendir("/proc");
    if (!d)
        BLOCKED("opendir /proc: %s", E);
    struct dirent *de;
    int n = 0;
    char pids[256] = "";
    while ((de = readdir(d))) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        if (n++ < 12) {
            strncat(pids, de->d_name, sizeof pids - strlen(pids) - 2);
            strcat(pids, " ");
        }
    }
    closedir(d);
    if (n > max)
        ESCAPED("%d processes visible in /proc (more than %d): %s...", n, max, pids);
    BLOCKED("only %d processes visible: %s", n, pids);
}

static void a_proc_hostpid(void)
{
    const char *pid = need(0, "HOSTPID");
    char p[64], buf[256];
    snprintf(p, sizeof p, "/proc/%s/cmdline", pid);
    ssize_t n = read_small(p, buf, sizeof buf);
    if (n < 0)
        BLOCKED("%s: %s", p, E);
    for (ssize_t i = 0; i < n; i++)
        if (!buf[i])
            buf[i] = ' ';
    ESCAPED("host pid %s visible, cmdline '%s'", pid, buf);
}

static void a_ptrace_init(void)
{
    /* PTRACE_SEIZE: same permission path as PTRACE_ATTACH (ptrace_attach()),
     * without stopping pid 1 when the self-check runs unconfined. */
    if (ptrace(PTRACE_SEIZE, 1, 0, 0) == 0)
        ESCAPED("PTRACE_SEIZE of pid 1 succeeded");
    BLOCKED("PTRACE_SEIZE pid 1: %s", E);
}

static void a_ptrace_hostpid(void)
{
    pid_t pid = atoi(need(0, "HOSTPID"));
    if (ptrace(PTRACE_ATTACH, pid, 0, 0) != 0)
        BLOCKED("PTRACE_ATTACH %d: %s", (int)pid, E);
    int st;
    for (int i = 0; i < 100; i++) {
        if (waitpid(pid, &st, __WALL | WNOHANG) == pid)
            break;
        usleep(10000);
    }
    ptrace(PTRACE_DETACH, pid, 0, 0);
    ESCAPED("PTRACE_ATTACH to host pid %d succeeded", (int)pid);
}

static void a_ptrace_traceme(void)
{
    if (ptrace(PTRACE_TRACEME, 0, 0, 0) == 0)
        ESCAPED("PTRACE_TRACEME succeeded (parent pid %d is now our tracer)", (int)getppid());
    BLOCKED("PTRACE_TRACEME: %s", E);
}

static void a_process_vm_readv(void)
{
    pid_t pid = atoi(need(0, "HOSTPID"));
    char p[64], maps[256];
    unsigned long addr = 0x400000;
    snprintf(p, sizeof p, "/proc/%d/maps", (int)pid);
    if (read_small(p, maps, sizeof maps) > 0)
        addr = strtoul(maps, NULL, 16);
    char buf[64];
    struct iovec l = {buf, sizeof buf}, r = {(void *)addr, sizeof buf};
    ssize_t n = process_vm_readv(pid, &l, 1, &r, 1, 0);
    if (n > 0)
        ESCAPED("read %zd bytes of host pid %d's memory at %#lx", n, (int)pid, addr);
    if (errno == EFAULT)
        ESCAPED("process_vm_readv on pid %d passed the permission check (EFAULT at %#lx)", (int)pid, addr);
    BLOCKED("process_vm_readv pid %d: %s", (int)pid, E);
}

static void a_kill_hostpid(void)
{
    pid_t pid = atoi(need(0, "HOSTPID"));
    if (kill(pid, 0) != 0)
        note("kill(%d, 0): %s", (int)pid, E);
    if (kill(pid, SIGKILL) == 0)
        ESCAPED("kill(%d, SIGKILL) succeeded", (int)pid);
    note("kill(%d, SIGKILL): %s", (int)pid, E);
    BLOCKED("%s", g_log);
}

static void a_signal_scope(void)
{
    pid_t targets[2] = {1, getppid()};
    for (int i = 0; i < 2; i++) {
        if (targets[i] == getpid())
            continue;
        if (kill(targets[i], 0) == 0)
            ESCAPED("may signal pid %d (kill(%d, 0) succeeded)", (int)targets[i], (int)targets[i]);
        note("kill(%d, 0): %s", (int)targets[i], E);
    }
    BLOCKED("%s", g_log);
}

static void a_kill_all(void)
{
    require_sandbox();
    if (kill(-1, SIGKILL) == 0)
        ESCAPED("kill(-1, SIGKILL) signalled at least one process");
    BLOCKED("kill(-1, SIGKILL): %s", E);
}

/* --------------------------------------------------- mounts & namespaces */

static void a_mount_tmpfs(void)
{
    char d[PATH_MAX];
    snprintf(d, sizeof d, "%s/hostile-mnt-%d", tmpdir(), (int)getpid());
    if (mkdir(d, 0700) != 0)
        note("mkdir %s: %s", d, E);
    if (mount("hostile", d, "tmpfs", 0, "size=1m") == 0) {
        umount2(d, MNT_DETACH);
        rmdir(d);
        ESCAPED("mounted a tmpfs on %s", d);
    }
    note("mount tmpfs on %s: %s", d, E);
    rmdir(d);
    BLOCKED("%s", g_log);
}

static void a_remount_rw(void)
{
    const char *path = param(0, "/");
    struct statvfs sv;
    if (statvfs(path, &sv) != 0)
        BLOCKED("statvfs %s: %s", path, E);
    /* Keep every per-mount flag as it is, except read-only. */
    unsigned long fl = MS_REMOUNT | MS_BIND;
    if (sv.f_flag & ST_NOSUID) fl |= MS_NOSUID;
    if (sv.f_flag & ST_NODEV) fl |= MS_NODEV;
    if (sv.f_flag & ST_NOEXEC) fl |= MS_NOEXEC;
    if (sv.f_flag & ST_NOATIME) fl |= MS_NOATIME;
    if (sv.f_flag & ST_NODIRATIME) fl |= MS_NODIRATIME;
    if (sv.f_flag & ST_RELATIME) fl |= MS_RELATIME;
    if (mount(NULL, path, NULL, fl, NULL) == 0)
        ESCAPED("remounted %s read-write (it was %s)", path, (sv.f_flag & ST_RDONLY) ? "read-only" : "already rw");
    BLOCKED("remount %s rw: %s", path, E);
}

static void a_unshare_user(void)
{
    if (unshare(CLONE_NEWUSER) == 0)
        ESCAPED("unshare(CLONE_NEWUSER) created a nested user namespace");
    BLOCKED("unshare(CLONE_NEWUSER): %s", E);
}

static void clone_with(unsigned long flags, const char *what)
{
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        _exit(0);
    if (pid < 0)
        BLOCKED("clone(%s): %s", what, E);
    waitpid((pid_t)pid, NULL, 0);
    ESCAPED("clone(%s) created a child in new namespaces", what);
}

static void a_clone_newns(void) { clone_with(CLONE_NEWNS, "CLONE_NEWNS"); }
static void a_clone_newnet(void) { clone_with(CLONE_NEWNET, "CLONE_NEWNET"); }
static void a_clone_newuser_ns(void)
{
    clone_with(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET, "CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWNET");
}

static void a_setns(void)
{
    const char *nss[] = {"mnt", "net", "pid", "ipc", "uts", "cgroup", "time", "user"};
    const char *pids[2] = {"1", param(0, NULL)};
    for (int j = 0; j < 2; j++) {
        if (!pids[j])
            continue;
        for (size_t i = 0; i < sizeof nss / sizeof *nss; i++) {
            char p[64];
            snprintf(p, sizeof p, "/proc/%s/ns/%s", pids[j], nss[i]);
            int fd = open(p, O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                if (i == 0 || errno != ENOENT)
                    note("open %s: %s", p, E);
                continue;
            }
            if (setns(fd, 0) == 0)
                ESCAPED("setns(%s) succeeded", p);
            note("setns %s: %s", p, E);
            close(fd);
        }
    }
    BLOCKED("%s", g_log);
}

static void a_chroot(void)
{
    char d[PATH_MAX];
    int tfd = open(tmpdir(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    snprintf(d, sizeof d, "%s/hostile-chroot-%d", tmpdir(), (int)getpid());
    mkdir(d, 0700);
    if (chroot(d) == 0) {
        char rel[64];
        snprintf(rel, sizeof rel, "hostile-chroot-%d", (int)getpid());
        if (tfd >= 0)
            unlinkat(tfd, rel, AT_REMOVEDIR);
        ESCAPED("chroot(%s) succeeded", d);
    }
    int e = errno;
    rmdir(d);
    BLOCKED("chroot %s: %s", d, ename(e));
}

static void a_pivot_root(void)
{
    /* In a child: private mount ns first, so that success can never move
     * the root of a namespace anyone else lives in. */
    pid_t c = fork();
    if (c < 0)
        BLOCKED("fork: %s", E);
    if (c == 0) {
        long r;
        if (unshare(CLONE_NEWNS) == 0) {
            char d[PATH_MAX], old[PATH_MAX + 8];
            mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
            snprintf(d, sizeof d, "%s/hostile-pivot-%d", tmpdir(), (int)getpid());
            mkdir(d, 0700);
            mount("hostile", d, "tmpfs", 0, "size=1m");
            snprintf(old, sizeof old, "%s/old", d);
            mkdir(old, 0700);
            r = syscall(SYS_pivot_root, d, old);
        } else {
            /* Cannot isolate: probe only. The kernel checks CAP_SYS_ADMIN
             * before it looks at the (nonexistent) paths, so EPERM means no
             * privilege and ENOENT means privileged. */
            r = syscall(SYS_pivot_root, "/nonexistent-hostile-new", "/nonexistent-hostile-old");
        }
        _exit(r == 0 ? 200 : (errno & 0xff));
    }
    int st;
    waitpid(c, &st, 0);
    if (!WIFEXITED(st))
        BLOCKED("child died by signal %d", WTERMSIG(st));
    int code = WEXITSTATUS(st);
    if (code == 200)
        ESCAPED("pivot_root succeeded");
    if (code != EPERM && code != ENOSYS && code != EACCES)
        ESCAPED("pivot_root passed the privilege check (%s)", ename(code));
    BLOCKED("pivot_root: %s", ename(code));
}

static void a_fanotify(void)
{
    int fd = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC, O_RDONLY);
    if (fd >= 0)
        ESCAPED("fanotify_init(FAN_CLASS_NOTIF) succeeded");
    BLOCKED("fanotify_init: %s", E);
}

/* ------------------------------------------------------------ network */

/* 0 connected; -1 immediate failure (errno); -2 in progress after 1 s. */
static int connect_1s(int s, const struct sockaddr *sa, socklen_t len)
{
    fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
    if (connect(s, sa, len) == 0)
        return 0;
    if (errno != EINPROGRESS)
        return -1;
    struct pollfd p = {s, POLLOUT, 0};
    if (poll(&p, 1, 1000) != 1)
        return -2;
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el);
    errno = err;
    return err ? -3 : 0;
}

static void a_tcp_host(void)
{
    const char *port = need(0, "PORT");
    const char *host = param(1, "127.0.0.1");
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        BLOCKED("socket(AF_INET, SOCK_STREAM): %s", E);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};
    inet_pton(AF_INET, host, &a.sin_addr);
    int r = connect_1s(s, (struct sockaddr *)&a, sizeof a);
    if (r == 0)
        ESCAPED("connected to %s:%s", host, port);
    if (r == -2)
        ESCAPED("connect to %s:%s still in progress after 1 s: a SYN left the sandbox", host, port);
    BLOCKED("connect %s:%s: %s", host, port, E);
}

static void a_tcp_public(void)
{
    const char *host = param(0, "1.1.1.1");
    int port = atoi(param(1, "80"));
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        BLOCKED("socket(AF_INET, SOCK_STREAM): %s", E);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int r = connect_1s(s, (struct sockaddr *)&a, sizeof a);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    if (r == 0)
        ESCAPED("connected to %s:%d in %ld ms", host, port, ms);
    if (r == -2)
        ESCAPED("connect to %s:%d in progress after %ld ms: a SYN left (there is a route)", host, port, ms);
    if (r == -3)
        ESCAPED("connect to %s:%d went out and failed later (%s after %ld ms)", host, port, E, ms);
    BLOCKED("connect %s:%d failed at once: %s (%ld ms)", host, port, E, ms);
}

static void a_udp_send(void)
{
    const char *port = need(0, "PORT");
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        BLOCKED("socket(AF_INET, SOCK_DGRAM): %s", E);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (sendto(s, "hostile", 7, 0, (struct sockaddr *)&a, sizeof a) == 7)
        ESCAPED("sendto 127.0.0.1:%s succeeded (loopback is up: the net ns is not empty)", port);
    note("sendto 127.0.0.1:%s: %s", port, E);
    struct sockaddr_in b = {.sin_family = AF_INET, .sin_port = htons(53)};
    inet_pton(AF_INET, "1.1.1.1", &b.sin_addr);
    if (sendto(s, "hostile", 7, 0, (struct sockaddr *)&b, sizeof b) == 7)
        ESCAPED("sendto 1.1.1.1:53 succeeded: a datagram left the sandbox");
    note("sendto 1.1.1.1:53: %s", E);
    BLOCKED("%s", g_log);
}

static void a_raw_packet(void)
{
    int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (s >= 0)
        ESCAPED("socket(AF_PACKET, SOCK_RAW) succeeded");
    BLOCKED("socket(AF_PACKET, SOCK_RAW): %s", E);
}

static void a_raw_icmp(void)
{
    int s = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
    if (s >= 0)
        ESCAPED("socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) succeeded");
    BLOCKED("socket(AF_INET, SOCK_RAW, ICMP): %s", E);
}

static void a_abstract_unix(void)
{
    const char *name = need(0, "NAME");
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        BLOCKED("socket(AF_UNIX): %s", E);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    if (n > sizeof a.sun_path - 1)
        n = sizeof a.sun_path - 1;
    memcpy(a.sun_path + 1, name, n);
    if (connect(s, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path) + 1 + n) == 0)
        ESCAPED("connected to abstract socket @%s", name);
    BLOCKED("connect @%s: %s", name, E);
}

static void a_unix_path(void)
{
    const char *paths[] = {param(0, NULL), "/run/docker.sock", "/var/run/docker.sock",
                           "/run/containerd/containerd.sock", "/run/podman/podman.sock",
                           "/run/dbus/system_bus_socket", "/run/systemd/private",
                           "/run/systemd/journal/socket", NULL};
    int absent = 0;
    for (int i = 0; i < (int)(sizeof paths / sizeof *paths); i++) {
        const char *p = paths[i];
        if (!p)
            continue;
        struct stat st;
        if (stat(p, &st) != 0) {
            if (i == 0 || errno != ENOENT)
                note("stat %s: %s", p, E);
            else
                absent++;
            continue;
        }
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0) {
            note("socket(AF_UNIX): %s", E);
            continue;
        }
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%s", p);
        if (connect(s, (struct sockaddr *)&a, sizeof a) == 0)
            ESCAPED("connected to host unix socket %s", p);
        note("%s exists, connect: %s", p, E);
        close(s);
    }
    BLOCKED("%s; %d well-known daemon sockets absent (ENOENT)", g_log, absent);
}

/* ---------------------------------------------------------- devices */

static void a_mknod(void)
{
    char p[PATH_MAX];
    struct {
        mode_t type;
        dev_t dev;
        const char *what;
    } nodes[2] = {{S_IFBLK, makedev(254, 0), "block 254:0 (vda)"},
                  {S_IFCHR, makedev(1, 1), "char 1:1 (mem)"}};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/hostile-node-%d-%d", tmpdir(), (int)getpid(), i);
        if (mknod(p, nodes[i].type | 0600, nodes[i].dev) == 0) {
            unlink(p);
            ESCAPED("mknod %s %s succeeded", p, nodes[i].what);
        }
        note("mknod %s: %s", nodes[i].what, E);
    }
    BLOCKED("%s", g_log);
}

static void open_any(const char *const *paths, size_t n, int readit)
{
    for (size_t i = 0; i < n; i++) {
        int fd = open(paths[i], O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
            note("%s: %s", paths[i], E);
            continue;
        }
        if (!readit)
            ESCAPED("opened %s", paths[i]);
        char buf[512];
        ssize_t r = read(fd, buf, sizeof buf);
        if (r > 0)
            ESCAPED("opened %s and read %zd bytes", paths[i], r);
        note("%s opened, read: %s", paths[i], r < 0 ? E : "EOF");
        close(fd);
    }
    BLOCKED("%s", g_log);
}

static void a_dev_mem(void)
{
    const char *p[] = {"/dev/mem", "/dev/kmem", "/dev/port"};
    open_any(p, 3, 0);
}

static void a_dev_kmsg(void)
{
    const char *p[] = {"/dev/kmsg"};
    open_any(p, 1, 1);
}

static void a_dev_disk(void)
{
    const char *p[] = {param(0, "/dev/vda"), "/dev/sda", "/dev/vda", "/dev/nvme0n1", "/dev/xvda"};
    open_any(p, 5, 1);
}

static void a_userfaultfd(void)
{
    long fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0)
        ESCAPED("userfaultfd() succeeded");
    note("userfaultfd(): %s", E);
    fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | 1 /* UFFD_USER_MODE_ONLY */);
    if (fd >= 0)
        ESCAPED("userfaultfd(UFFD_USER_MODE_ONLY) succeeded");
    note("userfaultfd(USER_MODE_ONLY): %s", E);
    const char *p[] = {"/dev/userfaultfd"};
    open_any(p, 1, 0);
}

static void a_tiocsti(void)
{
    for (int fd = 0; fd < 3; fd++) {
        char c = ' '; /* harmless if it lands */
        if (ioctl(fd, TIOCSTI, &c) == 0)
            ESCAPED("TIOCSTI on fd %d injected input into the terminal", fd);
        note("fd %d: %s", fd, E);
    }
    BLOCKED("%s", g_log);
}

/* warden's own stdout and stderr may be the operator's terminal: the plugin must
   get neither it (whose keystrokes it could read, whose modes and line discipline
   it could change) nor warden's session (whose foreground it could take). It may
   get a terminal of its own; changing that one must not reach the operator's (the
   harness checks its terminal afterwards). */
static void a_tty(void)
{
    pid_t sid = getsid(0);
    if (sid != 1)
        ESCAPED("in a session led from outside the sandbox (getsid(0) = %d)", sid);
    for (int fd = 1; fd < 3; fd++) {
        struct termios t;
        if (!isatty(fd) || tcgetattr(fd, &t) != 0)
            continue;
        t.c_lflag &= ~(ECHO | ICANON);
        note("fd %d: a terminal; echo off %s", fd, tcsetattr(fd, TCSANOW, &t) == 0 ? "done" : E);
    }
    dprintf(2, "tty: a line on stderr\n");
    BLOCKED("the session is the sandbox init's; %s", g_log[0] ? g_log : "no terminal");
}

static void a_iopl(void)
{
    if (syscall(SYS_iopl, 3) == 0) {
        syscall(SYS_iopl, 0);
        ESCAPED("iopl(3) succeeded");
    }
    note("iopl(3): %s", E);
    if (syscall(SYS_ioperm, 0x80, 1, 1) == 0) {
        syscall(SYS_ioperm, 0x80, 1, 0);
        ESCAPED("ioperm(0x80) succeeded");
    }
    note("ioperm(0x80): %s", E);
    BLOCKED("%s", g_log);
}

/* ------------------------------------------------- /proc/sys and /sys */

/* Writes VALUE (or, when VALUE is NULL, what is there already) to PATH. */
static int write_back(const char *path, const char *value, char *err, size_t errlen)
{
    char cur[512];
    if (!value) {
        ssize_t n = read_small(path, cur, sizeof cur);
        if (n < 0) {
            snprintf(err, errlen, "read %s: %s", path, E);
            return 0;
        }
        value = cur;
    }
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "open %s O_WRONLY: %s", path, E);
        return 0;
    }
    size_t len = strlen(value);
    ssize_t w = write(fd, value, len ? len : 1);
    int e = errno;
    close(fd);
    if (w < 0) {
        snprintf(err, errlen, "write %s: %s", path, ename(e));
        return 0;
    }
    return 1;
}

static void a_proc_sys_hostname(void)
{
    char err[256];
    const char *v = param(0, NULL);
    if (write_back("/proc/sys/kernel/hostname", v, err, sizeof err))
        ESCAPED("wrote /proc/sys/kernel/hostname%s", v ? "" : " (its current value)");
    BLOCKED("%s", err);
}

static void a_core_pattern(void)
{
    require_sandbox();
    char err[256];
    if (write_back("/proc/sys/kernel/core_pattern", NULL, err, sizeof err))
        ESCAPED("wrote /proc/sys/kernel/core_pattern (its current value)");
    BLOCKED("%s", err);
}

static void a_sysrq(void)
{
    require_sandbox();
    char err[256];
    /* 'h' only prints the sysrq help to the kernel log. */
    if (write_back("/proc/sysrq-trigger", "h", err, sizeof err))
        ESCAPED("wrote 'h' to /proc/sysrq-trigger");
    BLOCKED("%s", err);
}

static void a_sys_write(void)
{
    char err[256];
    const char *paths[] = {"/sys/kernel/uevent_helper", "/sys/kernel/mm/transparent_hugepage/enabled",
                           "/sys/kernel/mm/ksm/run"};
    for (int i = 0; i < 3; i++) {
        char cur[256], val[64];
        const char *v = NULL;
        if (i == 1 && read_small(paths[i], cur, sizeof cur) > 0) {
            /* "always [madvise] never": write back the selected word */
            char *b = strchr(cur, '['), *e = b ? strchr(b, ']') : NULL;
            if (b && e) {
                snprintf(val, sizeof val, "%.*s", (int)(e - b - 1), b + 1);
                v = val;
            }
        }
        if (write_back(paths[i], v, err, sizeof err))
            ESCAPED("wrote %s (its current value)", paths[i]);
        note("%s", err);
    }
    BLOCKED("%s", g_log);
}

static void a_cgroup_release_agent(void)
{
    char err[256], p[128];
    const char *ctl[] = {"memory", "pids", "cpu", "devices", "freezer", "blkio", "cpuset", "rdma", "systemd"};
    for (size_t i = 0; i < sizeof ctl / sizeof *ctl; i++) {
        snprintf(p, sizeof p, "/sys/fs/cgroup/%s/release_agent", ctl[i]);
        if (write_back(p, NULL, err, sizeof err))
            ESCAPED("wrote %s (its current value): the release_agent escape is open", p);
        if (i == 0 || !strstr(err, "ENOENT"))
            note("%s", err);
    }
    BLOCKED("%s", g_log);
}

/* ------------------------------------------------------ kernel surface */

static void a_add_key(void)
{
    long k = syscall(SYS_add_key, "user", "hostile-probe", "x", 1, -2 /* KEY_SPEC_PROCESS_KEYRING */);
    if (k >= 0)
        ESCAPED("add_key created key %ld in the (host-shared) kernel keyring", k);
    BLOCKED("add_key: %s", E);
}

static void a_keyctl(void)
{
    /* KEYCTL_JOIN_SESSION_KEYRING (1) with a new name: creates a keyring. */
    long k = syscall(SYS_keyctl, 1, "hostile-session");
    if (k >= 0)
        ESCAPED("keyctl(JOIN_SESSION_KEYRING) created keyring %ld", k);
    BLOCKED("keyctl(JOIN_SESSION_KEYRING): %s", E);
}

static void a_request_key(void)
{
    /* NULL callout: no upcall; ENOKEY means the keyring code was reached. */
    long k = syscall(SYS_request_key, "user", "hostile-nonexistent", NULL, 0);
    if (k >= 0 || errno == ENOKEY || errno == EKEYREVOKED || errno == EKEYEXPIRED)
        ESCAPED("request_key reached the kernel keyring (%s)", k >= 0 ? "found" : E);
    BLOCKED("request_key: %s", E);
}

static void a_bpf_map(void)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4;
    attr.value_size = 4;
    attr.max_entries = 1;
    long fd = syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr);
    if (fd >= 0)
        ESCAPED("bpf(BPF_MAP_CREATE) succeeded");
    BLOCKED("bpf(BPF_MAP_CREATE): %s", E);
}

static void a_bpf_prog(void)
{
    struct bpf_insn insns[2];
    memset(insns, 0, sizeof insns);
    insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K; /* r0 = 0 */
    insns[1].code = BPF_JMP | BPF_EXIT;
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insns = (uint64_t)(uintptr_t)insns;
    attr.insn_cnt = 2;
    attr.license = (uint64_t)(uintptr_t) "GPL";
    long fd = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    if (fd >= 0)
        ESCAPED("bpf(BPF_PROG_LOAD) loaded a program");
    BLOCKED("bpf(BPF_PROG_LOAD): %s", E);
}

static void a_perf_event_open(void)
{
    struct perf_event_attr pe;
    memset(&pe, 0, sizeof pe);
    pe.type = PERF_TYPE_SOFTWARE;
    pe.size = sizeof pe;
    pe.config = PERF_COUNT_SW_CPU_CLOCK;
    pe.disabled = 1;
    long fd = syscall(SYS_perf_event_open, &pe, -1, 0, -1, 0);
    if (fd >= 0)
        ESCAPED("perf_event_open system-wide on cpu 0 succeeded");
    note("system-wide: %s", E);
    pe.exclude_kernel = 1;
    pe.exclude_hv = 1;
    fd = syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0);
    if (fd >= 0)
        ESCAPED("perf_event_open on self succeeded");
    note("self: %s", E);
    BLOCKED("%s", g_log);
}

static void a_io_uring(void)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    long fd = syscall(SYS_io_uring_setup, 4, &p);
    if (fd >= 0)
        ESCAPED("io_uring_setup succeeded");
    BLOCKED("io_uring_setup: %s", E);
}

static void a_syslog(void)
{
    char buf[4096];
    int n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, sizeof buf);
    if (n > 0)
        ESCAPED("syslog(READ_ALL) read %d bytes of the kernel log", n);
    BLOCKED("syslog(READ_ALL): %s", n < 0 ? E : "empty");
}

/* Probes below pass bad arguments whose check the kernel makes AFTER the
 * privilege check: EPERM = no privilege; any other result = privileged. */
static void priv_probe(long r, const char *what)
{
    if (r == 0)
        ESCAPED("%s succeeded", what);
    if (errno == EPERM || errno == ENOSYS || errno == EACCES)
        BLOCKED("%s: %s", what, E);
    ESCAPED("%s passed the privilege check (%s)", what, E);
}

static void a_init_module(void)
{
    require_sandbox();
    static const char junk[16] = "\177ELFhostile";
    priv_probe(syscall(SYS_init_module, junk, sizeof junk, ""), "init_module(junk image)");
}

static void a_finit_module(void)
{
    require_sandbox();
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC); /* not a module: ENOEXEC if privileged */
    if (fd < 0)
        fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    priv_probe(syscall(SYS_finit_module, fd, "", 0), "finit_module(non-module)");
}

static void a_delete_module(void)
{
    require_sandbox();
    priv_probe(syscall(SYS_delete_module, "hostile_no_such_module", O_NONBLOCK),
               "delete_module(no such module)");
}

static void a_reboot(void)
{
    require_sandbox();
    /* In a child pid ns, CAD_OFF gives EINVAL once CAP_SYS_BOOT is granted. */
    priv_probe(syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_CAD_OFF, NULL),
               "reboot(CAD_OFF)");
}

static void a_kexec_load(void)
{
    require_sandbox();
    /* unknown flag bit 0x8000 and too many segments: EINVAL if permitted */
    priv_probe(syscall(SYS_kexec_load, 0UL, 1000UL, NULL, 0x8000UL), "kexec_load(invalid)");
}

static void a_swapon(void)
{
    require_sandbox();
    priv_probe(syscall(SYS_swapon, "/nonexistent-hostile-swapfile", 0), "swapon(nonexistent)");
}

static void a_clock_settime(void)
{
    require_sandbox();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (clock_settime(CLOCK_REALTIME, &ts) == 0)
        ESCAPED("clock_settime(CLOCK_REALTIME) succeeded");
    BLOCKED("clock_settime: %s", E);
}

static void a_sethostname(void)
{
    const char *host = need(0, "HOST_HOSTNAME");
    require_sandbox();
    char mine[256] = "", want[64];
    gethostname(mine, sizeof mine);
    snprintf(want, sizeof want, "hostile-%d", (int)getpid());
    unsigned long uts = ns_ino("uts");
    if (sethostname(want, strlen(want)) != 0)
        BLOCKED("sethostname: %s (our hostname '%s', host's '%s')", E, mine, host);
    if (uts == PROC_UTS_INIT_INO)
        ESCAPED("sethostname changed the HOST's hostname (initial uts ns)");
    BLOCKED("sethostname succeeded only in a private uts ns (%#lx); host's is '%s'", uts, host);
}

/* The sandbox init has the plugin's uid: prlimit64 on it would pass the kernel's
   permission check. */
static void a_prlimit_init(void)
{
    struct rlimit cur, low = {7, 7};
    if (prlimit(1, RLIMIT_NOFILE, NULL, &cur) == 0)
        note("read pid 1's RLIMIT_NOFILE (%lu)", (unsigned long)cur.rlim_cur);
    else
        note("read pid 1's limits: %s", E);
    if (prlimit(1, RLIMIT_NOFILE, &low, NULL) == 0)
        ESCAPED("lowered the sandbox init's RLIMIT_NOFILE to 7");
    note("lower pid 1's RLIMIT_NOFILE: %s", E);
    BLOCKED("%s", g_log);
}

/* FALLOC_FL_KEEP_SIZE allocates blocks without growing the file, so neither
   RLIMIT_FSIZE nor the data quota's size check sees them. */
static void a_fallocate_keep_size(void)
{
    int fd = open("/tmp/hostile-falloc", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        BLOCKED("open /tmp/hostile-falloc: %s", E);
    if (fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 4096) == 0)
        ESCAPED("fallocate(FALLOC_FL_KEEP_SIZE) allocated blocks past the file's size");
    note("fallocate(FALLOC_FL_KEEP_SIZE): %s", E);
    if (fallocate(fd, 0, 0, 4096) != 0)
        note("fallocate(0) failed too: %s", E);
    BLOCKED("%s", g_log);
}

static void a_setrlimit(void)
{
    const struct {
        int res;
        const char *name;
    } rs[] = {{RLIMIT_NOFILE, "NOFILE"}, {RLIMIT_NPROC, "NPROC"}, {RLIMIT_AS, "AS"},
              {RLIMIT_FSIZE, "FSIZE"}, {RLIMIT_MEMLOCK, "MEMLOCK"}, {RLIMIT_CPU, "CPU"},
              {RLIMIT_CORE, "CORE"}};
    char nr[32];
    unsigned long nr_open = read_small("/proc/sys/fs/nr_open", nr, sizeof nr) > 0 ? strtoul(nr, NULL, 10) : 1048576;
    int tried = 0;
    for (size_t i = 0; i < sizeof rs / sizeof *rs; i++) {
        struct rlimit r;
        if (getrlimit(rs[i].res, &r) != 0 || r.rlim_max == RLIM_INFINITY)
            continue;
        if (rs[i].res == RLIMIT_NOFILE && r.rlim_max + 1 > nr_open)
            continue;
        struct rlimit up = {r.rlim_max + 1, r.rlim_max + 1};
        tried++;
        if (setrlimit(rs[i].res, &up) == 0)
            ESCAPED("raised RLIMIT_%s hard limit from %lu to %lu", rs[i].name,
                    (unsigned long)r.rlim_max, (unsigned long)up.rlim_max);
        note("RLIMIT_%s %lu->%lu: %s", rs[i].name, (unsigned long)r.rlim_max, (unsigned long)up.rlim_max, E);
    }
    if (!tried) {
        /* Every hard limit is infinite: lower one, then try to raise it back. */
        struct rlimit lo = {0, 1 << 20}, inf = {0, RLIM_INFINITY};
        if (setrlimit(RLIMIT_CORE, &lo) == 0 && setrlimit(RLIMIT_CORE, &inf) == 0)
            ESCAPED("raised RLIMIT_CORE hard limit from 1 MiB back to infinity");
        note("RLIMIT_CORE lower-then-raise: %s", E);
    }
    BLOCKED("%s", g_log);
}

static void a_nice(void)
{
    errno = 0;
    int before = getpriority(PRIO_PROCESS, 0);
    if (setpriority(PRIO_PROCESS, 0, -20) == 0 && getpriority(PRIO_PROCESS, 0) < before)
        ESCAPED("raised our priority from nice %d to %d", before, getpriority(PRIO_PROCESS, 0));
    BLOCKED("setpriority(-20) from nice %d: %s", before, E);
}

/* ------------------------------------------- identity & inherited state */

static void a_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        BLOCKED("opendir /proc/self/fd: %s (cannot inspect)", E);
    int self = dirfd(d), extra = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        int fd = atoi(de->d_name);
        if (fd == self || fd <= 3)
            continue;
        char p[64], t[256];
        snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(p, t, sizeof t - 1);
        t[n > 0 ? n : 0] = 0;
        note("fd %d -> %s", fd, t);
        extra++;
    }
    closedir(d);
    int type = 0, dom = 0;
    socklen_t l = sizeof type;
    if (getsockopt(3, SOL_SOCKET, SO_TYPE, &type, &l) != 0) {
        note("fd 3 is not a socket (%s)", E);
        extra++;
    } else {
        l = sizeof dom;
        getsockopt(3, SOL_SOCKET, SO_DOMAIN, &dom, &l);
        if (type != SOCK_SEQPACKET || dom != AF_UNIX) {
            note("fd 3 is a socket of domain %d type %d, not AF_UNIX SOCK_SEQPACKET", dom, type);
            extra++;
        }
    }
    if (extra)
        ESCAPED("%s", g_log);
    BLOCKED("only fds 0-3 open; fd 3 is AF_UNIX SOCK_SEQPACKET");
}

static void a_env(void)
{
    static const char *const want[] = {"PATH", "HOME", "TMPDIR", "TZ", "LANG", "WARDEN_PLUGIN_ID", "WARDEN_PLUGIN_VERSION", "WARDEN_FD"};
    enum { N = sizeof want / sizeof *want };
    int seen[N] = {0}, bad = 0;
    for (char **e = environ; *e; e++) {
        size_t n = strcspn(*e, "=");
        int found = 0;
        for (int i = 0; i < N; i++)
            if (strlen(want[i]) == n && !strncmp(*e, want[i], n)) {
                seen[i]++;
                found = 1;
            }
        if (!found) {
            note("extra %.*s", (int)n, *e);
            bad++;
        }
    }
    for (int i = 0; i < N; i++)
        if (seen[i] != 1) {
            note("%s seen %d times", want[i], seen[i]);
            bad++;
        }
    const char *fd = getenv("WARDEN_FD");
    if (!fd || strcmp(fd, "3") != 0) {
        note("WARDEN_FD=%s", fd ? fd : "(unset)");
        bad++;
    }
    if (bad)
        ESCAPED("%s", g_log);
    BLOCKED("environment is exactly the 8 documented variables, WARDEN_FD=3");
}

static void a_caps(void)
{
    char buf[8192];
    if (read_small("/proc/self/status", buf, sizeof buf) <= 0)
        BLOCKED("read /proc/self/status: %s (cannot inspect)", E);
    const char *zero[] = {"CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"};
    int bad = 0;
    for (int i = 0; i < 5; i++) {
        char *p = strstr(buf, zero[i]);
        if (!p) {
            note("%s missing", zero[i]);
            bad++;
            continue;
        }
        unsigned long long v = strtoull(p + strlen(zero[i]), NULL, 16);
        if (v) {
            note("%s %llx", zero[i], v);
            bad++;
        }
    }
    char *p = strstr(buf, "NoNewPrivs:");
    if (!p || atoi(p + 11) != 1) {
        note("NoNewPrivs %d", p ? atoi(p + 11) : -1);
        bad++;
    }
    p = strstr(buf, "\nSeccomp:");
    if (!p || atoi(p + 9) != 2) {
        note("Seccomp %d", p ? atoi(p + 9) : -1);
        bad++;
    }
    if (bad)
        ESCAPED("%s", g_log);
    BLOCKED("all capability sets empty, NoNewPrivs 1, Seccomp 2 (filter)");
}

static void a_uid0(void)
{
    uid_t r, e, s;
    getresuid(&r, &e, &s);
    char map[128] = "";
    read_small("/proc/self/uid_map", map, sizeof map);
    if (r == 0 || e == 0 || s == 0)
        ESCAPED("running as uid 0 (ruid %d euid %d suid %d; uid_map '%s')", (int)r, (int)e, (int)s, map);
    if (setuid(0) == 0 || getuid() == 0)
        ESCAPED("setuid(0) succeeded");
    note("uid %d, setuid(0): %s", (int)r, E);
    if (setresuid(0, 0, 0) == 0)
        ESCAPED("setresuid(0,0,0) succeeded");
    note("setresuid(0,0,0): %s", E);
    BLOCKED("%s", g_log);
}

/* ----------------------------------------------------------- resources */

static void a_tmp_cap(void)
{
    long cap = atol(param(0, "0"));
    long limit = cap > 0 ? cap + 1 : 64; /* MiB written without error = escape */
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/hostile-fill-%d", tmpdir(), (int)getpid());
    signal(SIGXFSZ, SIG_IGN); /* RLIMIT_FSIZE then shows as EFBIG */
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        BLOCKED("create %s: %s", p, E);
    static char chunk[1 << 20];
    memset(chunk, 'h', sizeof chunk);
    long mb = 0, bytes = 0;
    int err = 0;
    while (mb < limit) {
        ssize_t w = write(fd, chunk, sizeof chunk);
        if (w < 0) {
            err = errno;
            break;
        }
        bytes += w;
        if (w < (ssize_t)sizeof chunk) {
            /* short write: the next one reports the reason */
            continue;
        }
        mb++;
    }
    close(fd);
    unlink(p);
    if (!err)
        ESCAPED("wrote %ld MiB to %s without error (cap %ld MiB)", mb, tmpdir(), cap);
    BLOCKED("%s after %ld bytes (%ld MiB) in %s", ename(err), bytes, bytes >> 20, tmpdir());
}

static void a_fork_bomb(void)
{
    require_sandbox();
    long max = atol(param(0, "4096"));
    static pid_t kids[4096];
    if (max > 4096)
        max = 4096;
    long n = 0;
    int err = 0;
    while (n < max) {
        pid_t c = fork();
        if (c < 0) {
            err = errno;
            break;
        }
        if (c == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            for (;;)
                pause();
        }
        kids[n++] = c;
    }
    for (long i = 0; i < n; i++)
        kill(kids[i], SIGKILL);
    for (long i = 0; i < n; i++)
        waitpid(kids[i], NULL, 0);
    if (!err)
        ESCAPED("%ld forks succeeded (limit %ld not enforced)", n, max);
    BLOCKED("fork failed with %s after %ld forks", ename(err), n);
}

static void a_mem_bomb(void)
{
    require_sandbox();
    long limit = atol(param(0, "512"));
    long cap = 2 * limit + 64; /* MiB touched = escape */
    long mb = 0;
    while (mb < cap) {
        void *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            BLOCKED("mmap failed with %s after touching %ld MiB", E, mb);
        memset(p, 0x5a, 1 << 20);
        mb++;
        if (mb % 8 == 0) {
            fprintf(stderr, "mem_bomb: touched %ld MiB\n", mb);
            fflush(stderr);
        }
    }
    ESCAPED("touched %ld MiB (limit %ld MiB not enforced)", mb, limit);
}

/* ------------------------------------------------ found by review (sandbox) */

/*
 * stdout_rewrite: warden run passes its own stdout as it is when that is a file
 * (`warden run ... >> plugins.log`): the plugin shares the operator's open file
 * description, so it can clear O_APPEND, truncate the whole file (earlier runs'
 * lines, warden's own messages) and rewrite it from offset 0.  Blocked would be:
 * fd 1 is not a regular file (a pipe warden copies from), or the truncation fails.
 */
static void a_stdout_rewrite(void)
{
    struct stat st;
    if (fstat(1, &st) < 0)
        BLOCKED("fstat fd 1: %s", E);
    if (!S_ISREG(st.st_mode))
        BLOCKED("fd 1 is not a regular file (mode %o)", (unsigned)(st.st_mode & S_IFMT));
    long before = (long)st.st_size;
    int fl = fcntl(1, F_GETFL);
    if (fl >= 0 && (fl & O_APPEND) && fcntl(1, F_SETFL, fl & ~O_APPEND) < 0)
        note("clear O_APPEND: %s", E);
    if (ftruncate(1, 0) < 0)
        BLOCKED("ftruncate fd 1 (%ld bytes, flags 0%o): %s", before, fl, E);
    const char *forged = "FORGED by the plugin at offset 0\n";
    ssize_t w = pwrite(1, forged, strlen(forged), 0);
    fstat(1, &st);
    ESCAPED("truncated the operator's file on fd 1 from %ld to 0 bytes (O_APPEND was %s), "
            "pwrite at offset 0: %zd; size now %ld",
            before, (fl & O_APPEND) ? "set, cleared by F_SETFL" : "not set", w, (long)st.st_size);
}

/*
 * host_paths PATH...: the plugin learns the operator's host paths (the bundle's
 * directory, the trust and state directories) from /proc/self/mountinfo and from
 * its sandbox init's /proc/1/cmdline (warden's own argv: the init is a copy of
 * warden).  Finding any PATH there is an escape of host information.
 */
static void a_host_paths(void)
{
    need(0, "PATH");
    /* The init is a copy of warden: its command line and environment name the
     * operator's paths. (/proc/self/mountinfo shows bind sources: documented.) */
    const char *files[] = {"/proc/1/cmdline", "/proc/1/environ", "/proc/1/mountinfo"};
    int found = 0;
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        static char buf[65536];
        int fd = open(files[f], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            note("%s: %s", files[f], E);
            continue;
        }
        ssize_t n = 0, r;
        while (n < (ssize_t)sizeof buf - 1 && (r = read(fd, buf + n, sizeof buf - 1 - n)) > 0)
            n += r;
        close(fd);
        for (ssize_t i = 0; i < n; i++)
            if (!buf[i])
                buf[i] = ' ';
        buf[n < 0 ? 0 : n] = 0;
        for (int i = 0; i < g_argc; i++)
            if (strstr(buf, g_argv[i])) {
                note("%s shows %s", files[f], g_argv[i]);
                found++;
            }
    }
    if (found)
        ESCAPED("%s", g_log);
    BLOCKED("no host path found: %s", g_log[0] ? g_log : "none shown");
}

/* Not an attempt: for the "survives warden SIGKILL" test. */
static void a_sleepforever(void)
{
    const char *marker = need(0, "MARKER");
    pid_t c = fork();
    if (c < 0) {
        printf("ERROR sleepforever: fork: %s\n", E);
        fflush(stdout);
        _exit(2);
    }
    if (c == 0) {
        for (;;)
            pause();
    }
    printf("SLEEPING %s: pid %d child %d\n", marker, (int)getpid(), (int)c);
    fflush(stdout);
    for (;;)
        pause();
}

/* ------------------------------------------------------------- table */

enum { SAFE = 0, DESTRUCTIVE = 1, HELPER = 2 };
static const struct attempt {
    const char *name;
    void (*fn)(void);
    int kind;
    const char *params;
} attempts[] = {
    {"read_shadow", a_read_shadow, SAFE, ""},
    {"read_root", a_read_root, SAFE, ""},
    {"read_home", a_read_home, SAFE, ""},
    {"read_hostfile", a_read_hostfile, SAFE, "PATH [MARKER]"},
    {"proc1_root", a_proc1_root, SAFE, ""},
    {"open_by_handle", a_open_by_handle, SAFE, ""},
    {"proc_kcore", a_proc_kcore, SAFE, ""},
    {"write_root", a_write_root, SAFE, ""},
    {"write_usr", a_write_usr, SAFE, ""},
    {"write_etc", a_write_etc, SAFE, ""},
    {"write_bundle", a_write_bundle, SAFE, "[BUNDLEDIR=/bundle]"},
    {"write_exe", a_write_exe, SAFE, ""},
    {"proc_count", a_proc_count, SAFE, "[MAX=4]"},
    {"proc_hostpid", a_proc_hostpid, SAFE, "HOSTPID"},
    {"ptrace_init", a_ptrace_init, SAFE, ""},
    {"ptrace_hostpid", a_ptrace_hostpid, SAFE, "HOSTPID"},
    {"ptrace_traceme", a_ptrace_traceme, SAFE, ""},
    {"process_vm_readv", a_process_vm_readv, SAFE, "HOSTPID"},
    {"kill_hostpid", a_kill_hostpid, SAFE, "HOSTPID"},
    {"signal_scope", a_signal_scope, SAFE, ""},
    {"kill_all", a_kill_all, DESTRUCTIVE, ""},
    {"mount_tmpfs", a_mount_tmpfs, SAFE, ""},
    {"remount_rw", a_remount_rw, SAFE, "[PATH=/]"},
    {"unshare_user", a_unshare_user, SAFE, ""},
    {"clone_newns", a_clone_newns, SAFE, ""},
    {"clone_newnet", a_clone_newnet, SAFE, ""},
    {"clone_newuser_ns", a_clone_newuser_ns, SAFE, ""},
    {"setns", a_setns, SAFE, "[HOSTPID]"},
    {"chroot", a_chroot, SAFE, ""},
    {"pivot_root", a_pivot_root, SAFE, ""},
    {"fanotify", a_fanotify, SAFE, ""},
    {"raw_packet", a_raw_packet, SAFE, ""},
    {"raw_icmp", a_raw_icmp, SAFE, ""},
    {"tcp_host", a_tcp_host, SAFE, "PORT [ADDR=127.0.0.1]"},
    {"tcp_public", a_tcp_public, SAFE, "[ADDR=1.1.1.1] [PORT=80]"},
    {"udp_send", a_udp_send, SAFE, "PORT"},
    {"abstract_unix", a_abstract_unix, SAFE, "NAME"},
    {"unix_path", a_unix_path, SAFE, "[SOCKETPATH]"},
    {"mknod", a_mknod, SAFE, ""},
    {"dev_mem", a_dev_mem, SAFE, ""},
    {"dev_kmsg", a_dev_kmsg, SAFE, ""},
    {"dev_disk", a_dev_disk, SAFE, "[DEVICE=/dev/vda]"},
    {"tiocsti", a_tiocsti, SAFE, ""},
    {"tty", a_tty, SAFE, ""},
    {"iopl", a_iopl, SAFE, ""},
    {"proc_sys_hostname", a_proc_sys_hostname, SAFE, "[NEWNAME]"},
    {"sys_write", a_sys_write, SAFE, ""},
    {"cgroup_release_agent", a_cgroup_release_agent, SAFE, ""},
    {"add_key", a_add_key, SAFE, ""},
    {"keyctl", a_keyctl, SAFE, ""},
    {"request_key", a_request_key, SAFE, ""},
    {"bpf_map", a_bpf_map, SAFE, ""},
    {"bpf_prog", a_bpf_prog, SAFE, ""},
    {"perf_event_open", a_perf_event_open, SAFE, ""},
    {"userfaultfd", a_userfaultfd, SAFE, ""},
    {"io_uring", a_io_uring, SAFE, ""},
    {"syslog", a_syslog, SAFE, ""},
    {"fds", a_fds, SAFE, ""},
    {"env", a_env, SAFE, ""},
    {"caps", a_caps, SAFE, ""},
    {"uid0", a_uid0, SAFE, ""},
    {"setrlimit", a_setrlimit, SAFE, ""},
    {"prlimit_init", a_prlimit_init, SAFE, ""},
    {"fallocate_keep_size", a_fallocate_keep_size, SAFE, ""},
    {"nice", a_nice, SAFE, ""},
    {"tmp_cap", a_tmp_cap, SAFE, "[CAP_MB]"},
    {"sysrq", a_sysrq, DESTRUCTIVE, ""},
    {"core_pattern", a_core_pattern, DESTRUCTIVE, ""},
    {"init_module", a_init_module, DESTRUCTIVE, ""},
    {"finit_module", a_finit_module, DESTRUCTIVE, ""},
    {"delete_module", a_delete_module, DESTRUCTIVE, ""},
    {"reboot", a_reboot, DESTRUCTIVE, ""},
    {"kexec_load", a_kexec_load, DESTRUCTIVE, ""},
    {"swapon", a_swapon, DESTRUCTIVE, ""},
    {"clock_settime", a_clock_settime, DESTRUCTIVE, ""},
    {"sethostname", a_sethostname, DESTRUCTIVE, "HOST_HOSTNAME"},
    {"fork_bomb", a_fork_bomb, DESTRUCTIVE, "[MAX_FORKS=4096]"},
    {"mem_bomb", a_mem_bomb, DESTRUCTIVE, "[LIMIT_MB=512]"},
    {"stdout_rewrite", a_stdout_rewrite, SAFE, ""},
    {"host_paths", a_host_paths, SAFE, "PATH..."},
    {"sleepforever", a_sleepforever, HELPER, "MARKER"},
};

int main(int argc, char **argv)
{
    size_t n = sizeof attempts / sizeof *attempts;
    if (argc < 2) {
        fprintf(stderr, "usage: %s ATTEMPT [PARAMS...] | list\n", argv[0]);
        return 2;
    }
    if (!strcmp(argv[1], "list")) {
        static const char *kinds[] = {"safe", "destructive", "helper"};
        for (size_t i = 0; i < n; i++)
            printf("%s\t%s\t%s\n", attempts[i].name, kinds[attempts[i].kind], attempts[i].params);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(argv[1], attempts[i].name) != 0)
            continue;
        g_name = attempts[i].name;
        g_argc = argc - 2;
        g_argv = argv + 2;
        attempts[i].fn();
        /* every attempt ends in finish(); reaching here is a bug */
        printf("ERROR %s: attempt returned without a verdict\n", g_name);
        return 2;
    }
    printf("USAGE %s: unknown attempt (try 'list')\n", argv[1]);
    return 2;
}
