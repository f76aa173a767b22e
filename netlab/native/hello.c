/*
 * netlab-hello [--port N]: the HTTP app of the default lab's pods (the seed's "nginx").
 *
 * Answers GET / with a short page naming the pod (its host name), the address the request
 * arrived on (getsockname: the pod IP, after any DNAT) and the client address it saw
 * (getpeername: shows SNAT/masquerade), and logs one access line per request on stdout.
 * One process, one connection at a time, static: many pods run it, so it stays tiny.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void addr_str(const struct sockaddr_in *a, char *out, size_t n) {
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    snprintf(out, n, "%s:%u", ip, ntohs(a->sin_port));
}

static void serve(int c, const char *host) {
    char req[2048];
    size_t got = 0;
    /* Read the request head (a slow client must not stall the server for long). */
    struct timeval tv = {2, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (got < sizeof req - 1) {
        ssize_t r = read(c, req + got, sizeof req - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        req[got] = 0;
        if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
            break;
    }
    req[got] = 0;
    char *eol = strpbrk(req, "\r\n");
    if (eol)
        *eol = 0;

    struct sockaddr_in me, peer;
    socklen_t ml = sizeof me, pl = sizeof peer;
    char mine[32] = "?", theirs[32] = "?";
    if (getsockname(c, (struct sockaddr *)&me, &ml) == 0)
        addr_str(&me, mine, sizeof mine);
    if (getpeername(c, (struct sockaddr *)&peer, &pl) == 0)
        addr_str(&peer, theirs, sizeof theirs);

    int is_get = strncmp(req, "GET ", 4) == 0 || strncmp(req, "HEAD ", 5) == 0;
    char body[512], head[256];
    int blen = is_get
        ? snprintf(body, sizeof body, "Hello from pod %s\npod address: %s\nclient address: %s\n",
                   host, mine, theirs)
        : snprintf(body, sizeof body, "only GET is served here\n");
    int hlen = snprintf(head, sizeof head,
                        "HTTP/1.1 %s\r\nServer: netlab-hello\r\nContent-Type: text/plain\r\n"
                        "Content-Length: %d\r\nConnection: close\r\n\r\n",
                        is_get ? "200 OK" : "405 Method Not Allowed", blen);
    if (write(c, head, hlen) < 0 || (strncmp(req, "HEAD ", 5) != 0 && write(c, body, blen) < 0)) {
        /* the client went away: nothing to do */
    }

    char ts[32], line[2300];
    time_t now = time(NULL);
    strftime(ts, sizeof ts, "%d/%b/%Y:%H:%M:%S +0000", gmtime(&now));
    int n = snprintf(line, sizeof line, "%s - - [%s] \"%.2048s\" %d %d\n", theirs, ts, req,
                     is_get ? 200 : 405, blen);
    if (write(1, line, n) < 0) { /* log is best effort */ }
}

int main(int argc, char **argv) {
    int port = 80;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: netlab-hello [--port N]\n");
            return 2;
        }
    }
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "netlab-hello: --port: %d is not a port\n", port);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char host[256] = "?";
    gethostname(host, sizeof host - 1);

    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 128) < 0) {
        fprintf(stderr, "netlab-hello: listen on port %d: %s\n", port, strerror(errno));
        return 1;
    }
    printf("netlab-hello: pod %s listening on port %d\n", host, port);
    fflush(stdout);
    for (;;) {
        int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
                continue;
            fprintf(stderr, "netlab-hello: accept: %s\n", strerror(errno));
            return 1;
        }
        serve(c, host);
        close(c);
    }
}
