/* Test plugin for warden serve: speaks the broker protocol on fd 3 by hand.
 * argv[1] = mode, argv[2] = the version to say hello with.
 *   serve   hello, then answer pings until shutdown
 *   client  like serve, and make a kv.put every 5 ms; any error reply is printed
 *           to stderr as "CALL FAILED: ..." (the test greps warden's log)
 *   crash   exit 3 at once
 *   hang    hello, then stop reading (never answers a ping)
 *   nohello never says hello
 *   chatty  hello, then print many stdout lines and serve
 *   slowhello  like serve, with hello 1.5 s late
 *   slowclient like client, with hello 1.5 s late
 *   greedy  like client, but exits at once when its welcome does not grant
 *           kv:write (a hostile plugin refusing to be replaced by an instance
 *           with fewer grants)
 *   closefd hello, then after 500 ms close the channel and keep running
 *   bigexit hello, then grow stdout's pipe to 1 MiB, write 512 KiB of one line
 *           and "bigexit done" in a single write, and exit 0
 *   slowpong like serve, answering each ping 150 ms late
 *   bigserve like bigexit (the last line says "bigserve done"), then serve
 *           quietly: nothing more is written to stdout
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char buf[65536 + 1];

static void sendmsg_str(const char *s) {
  if (send(3, s, strlen(s), MSG_NOSIGNAL) < 0) _exit(10);
}

static int recv_msg(void) {
  ssize_t n = recv(3, buf, sizeof buf - 1, 0);
  if (n <= 0) _exit(11);
  buf[n] = 0;
  return (int)n;
}

static int slow_pongs;

/* Handles a message from warden; returns 1 for a reply to a call. */
static int handle(void) {
  if (strstr(buf, "\"type\":\"ping\"")) {
    if (slow_pongs) {
      struct timespec ts = {0, 150 * 1000 * 1000};
      nanosleep(&ts, 0);
    }
    char *p = strstr(buf, "\"seq\":");
    unsigned long long seq = p ? strtoull(p + 6, 0, 10) : 0;
    char out[96];
    snprintf(out, sizeof out, "{\"type\":\"pong\",\"seq\":%llu}", seq);
    sendmsg_str(out);
    return 0;
  }
  if (strstr(buf, "\"type\":\"shutdown\"")) {
    printf("shutdown received, exiting\n");
    fflush(stdout);
    _exit(0);
  }
  if (strstr(buf, "\"type\":\"reply\"")) {
    if (strstr(buf, "\"error\"")) {
      fprintf(stderr, "CALL FAILED: %s\n", buf);
      fflush(stderr);
    }
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "serve";
  const char *version = argc > 2 ? argv[2] : "1.0.0";
  const char *id = getenv("WARDEN_PLUGIN_ID");
  setvbuf(stdout, 0, _IOLBF, 0);
  if (!strcmp(mode, "crash")) {
    printf("crashing\n");
    return 3;
  }
  if (!strcmp(mode, "nohello")) {
    for (;;) pause();
  }
  if (!strcmp(mode, "slowhello") || !strcmp(mode, "slowclient")) {
    struct timespec ts = {1, 500 * 1000 * 1000};
    nanosleep(&ts, 0);
  }
  char hello[512];
  snprintf(hello, sizeof hello,
           "{\"type\":\"hello\",\"versions\":[1],\"plugin\":\"%s\",\"version\":\"%s\"}",
           id ? id : "?", version);
  sendmsg_str(hello);
  recv_msg();
  if (!strstr(buf, "\"welcome\"")) {
    fprintf(stderr, "no welcome: %s\n", buf);
    return 1;
  }
  if (!strcmp(mode, "greedy") && !strstr(buf, "\"kv:write\"")) {
    printf("welcomed without kv:write, exiting\n");
    return 4;
  }
  printf("%s %s serving (%s)\n", id, version, mode);
  slow_pongs = !strcmp(mode, "slowpong");
  if (!strcmp(mode, "hang")) {
    for (;;) pause();
  }
  if (!strcmp(mode, "closefd")) {
    struct timespec ts = {0, 500 * 1000 * 1000};
    nanosleep(&ts, 0);
    close(3);
    for (;;) pause();
  }
  if (!strcmp(mode, "bigexit") || !strcmp(mode, "bigserve")) {
    fflush(stdout);
    fcntl(1, F_SETPIPE_SZ, 1 << 20);
    size_t n = 512 * 1024;
    char *b = malloc(n + 32);
    if (!b) return 5;
    memset(b, 'x', n);
    b[n - 1] = '\n';
    snprintf(b + n, 32, "%s done\n", mode);
    size_t len = n + strlen(b + n), off = 0;
    while (off < len) {
      ssize_t w = write(1, b + off, len - off);
      if (w <= 0) return 6;
      off += (size_t)w;
    }
    if (!strcmp(mode, "bigexit")) return 0;
  }
  if (!strcmp(mode, "chatty")) {
    for (int i = 0; i < 1000; i++) printf("chatty line %d\n", i);
  }
  if (!strcmp(mode, "client") || !strcmp(mode, "slowclient") || !strcmp(mode, "greedy")) {
    unsigned long long n = 0;
    for (;;) {
      char call[256];
      n++;
      snprintf(call, sizeof call,
               "{\"type\":\"call\",\"id\":%llu,\"op\":\"kv.put\",\"args\":{\"key\":\"n\",\"value\":\"%llu\"}}",
               n, n);
      sendmsg_str(call);
      do recv_msg(); while (!handle());
      struct timespec ts = {0, 5 * 1000 * 1000};
      nanosleep(&ts, 0);
    }
  }
  for (;;) {
    recv_msg();
    handle();
  }
}
