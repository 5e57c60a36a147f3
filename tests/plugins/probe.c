/* Test plugin for warden's sandbox tests: reports what it can see and do. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

static void status_lines(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  if (!f) { printf("status: %s\n", strerror(errno)); return; }
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "Cap", 3) || !strncmp(line, "NoNewPrivs", 10) || !strncmp(line, "Seccomp:", 8))
      printf("status %s", line);
  fclose(f);
}

static void fds(void) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  int self = dirfd(d);
  printf("fds");
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    if (atoi(e->d_name) == self) continue;
    printf(" %s", e->d_name);
  }
  printf("\n");
  closedir(d);
  int type = 0; socklen_t len = sizeof type;
  if (getsockopt(3, SOL_SOCKET, SO_TYPE, &type, &len) == 0)
    printf("fd3 %s\n", type == SOCK_SEQPACKET ? "seqpacket" : "other");
  else
    printf("fd3 %s\n", strerror(errno));
}

static void try_write(const char *path, size_t bytes) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) { printf("write %s: %s\n", path, strerrorname_np(errno)); return; }
  static char buf[1 << 16];
  size_t done = 0;
  while (done < bytes) {
    ssize_t n = write(fd, buf, sizeof buf);
    if (n < 0) { printf("write %s: %s after %zu\n", path, strerrorname_np(errno), done); close(fd); unlink(path); return; }
    done += (size_t)n;
  }
  printf("write %s: ok %zu\n", path, done);
  close(fd);
  unlink(path);
}

static void exists(const char *path) {
  struct stat st;
  printf("exists %s %s\n", path, stat(path, &st) == 0 ? "yes" : strerrorname_np(errno));
}

int main(int argc, char **argv) {
  signal(SIGXFSZ, SIG_IGN);
  const char *mode = argc > 1 ? argv[1] : "report";
  if (!strcmp(mode, "hello")) {
    send(3, "{\"op\":\"hello\"}", 14, 0);
    return 0;
  }
  if (!strcmp(mode, "exit")) return atoi(argv[2]);
  if (!strcmp(mode, "kill")) { kill(getpid(), SIGKILL); return 1; }
  if (!strcmp(mode, "print")) { puts(argv[2]); return 0; }
  if (!strcmp(mode, "sleep")) {
    send(3, "{\"op\":\"hello\"}", 14, 0);
    if (fork() == 0) { sleep(1000); return 0; } /* a grandchild, to check it dies too */
    sleep(1000);
    return 0;
  }
  printf("uid %d gid %d\n", getuid(), getgid());
  printf("pid %d ppid %d\n", getpid(), getppid());
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  printf("hostname %s\n", host);
  /* Every mount at or under /usr, with its read-only or read-write flag. */
  FILE *mi = fopen("/proc/self/mountinfo", "r");
  char ml[1024];
  while (mi && fgets(ml, sizeof ml, mi)) {
    char point[512], opts[256];
    if (sscanf(ml, "%*s %*s %*s %*s %511s %255s", point, opts) == 2 && !strncmp(point, "/usr", 4))
      printf("mount %s %s\n", point, strncmp(opts, "ro", 2) ? "rw" : "ro");
  }
  if (mi) fclose(mi);
  int policy = sched_getscheduler(0);
  printf("sched %s\n", policy == SCHED_BATCH ? "batch" : policy == SCHED_OTHER ? "other" : policy < 0 ? strerrorname_np(errno) : "other-policy");
  struct sched_param sp = {0};
  printf("sched set normal %s\n", sched_setscheduler(0, SCHED_OTHER, &sp) < 0 ? strerrorname_np(errno) : "ok");
  for (char **e = environ; *e; e++) printf("env %s\n", *e);
  fds();
  status_lines();
  try_write("/tmp/small", 1 << 20);
  try_write("/tmp/big", (size_t)3 << 20);
  try_write("/rootfile", 1);
  try_write("/usr/warden-test", 1);
  try_write("/bundle/x", 1);
  exists("/root");
  exists("/home");
  exists("/etc/shadow");
  exists("/etc/passwd");
  exists("/work");
  exists("/bundle/manifest.json");
  /* The sandbox init is a copy of warden: it must stay out of reach (not even listed). */
  const char *initfiles[] = {"/proc/1/mem", "/proc/1/environ", "/proc/1/maps", "/proc/1/cmdline"};
  for (int i = 0; i < 4; i++) {
    int fd = open(initfiles[i], O_RDONLY);
    char c;
    if (fd >= 0 && read(fd, &c, 1) == 1) printf("read %s ok\n", initfiles[i]);
    else printf("read %s %s\n", initfiles[i], strerrorname_np(errno));
    if (fd >= 0) close(fd);
  }
  FILE *f = fopen("/proc/net/dev", "r");
  char line[256];
  int n = 0;
  while (f && fgets(line, sizeof line, f)) {
    if (++n <= 2) continue;
    char *c = strchr(line, ':');
    if (c) { *c = 0; char *s = line; while (*s == ' ') s++; printf("netif %s\n", s); }
  }
  FILE *cg = fopen("/proc/self/cgroup", "r");
  while (cg && fgets(line, sizeof line, cg)) if (strstr(line, "memory") || strstr(line, "pids")) printf("cgroup %s", line);
  int s = socket(AF_NETLINK, SOCK_RAW, 0);
  printf("socket netlink %s\n", s < 0 ? strerrorname_np(errno) : "ok");
  printf("unshare %s\n", unshare(CLONE_NEWUSER) < 0 ? strerrorname_np(errno) : "ok");
  fflush(stdout);
  return 0;
}
