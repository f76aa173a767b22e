/*
 * netlab-udpecho: a tiny UDP app for UDP services (server) and a client to talk to them.
 *
 *   netlab-udpecho [--port N]                 serve: answer each datagram with the pod's
 *                                             host name, the address it arrived on (the
 *                                             pod IP after any DNAT) and the client address
 *   netlab-udpecho --send IP:PORT [--sport N] [--timeout SECONDS] [--count N]
 *                                             send N datagrams (from source port N if
 *                                             given, so that they share one conntrack
 *                                             flow), print each answer; exit 1 when one
 *                                             got no answer, 7 when it was refused
 *
 * Static and tiny like netlab-hello: pods run host binaries and many may run this one.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void addr_str(const struct sockaddr_in *a, char *out, size_t n) {
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    snprintf(out, n, "%s:%u", ip, ntohs(a->sin_port));
}

static int serve(int port) {
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(s, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
        fprintf(stderr, "netlab-udpecho: bind udp port %d: %s\n", port, strerror(errno));
        return 1;
    }
    printf("netlab-udpecho: pod %s listening on udp port %d\n", host, port);
    fflush(stdout);
    for (;;) {
        char buf[1024], cbuf[256], out[1400];
        struct sockaddr_in peer;
        struct iovec iov = {buf, sizeof buf - 1};
        struct msghdr m = {.msg_name = &peer, .msg_namelen = sizeof peer, .msg_iov = &iov,
                           .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
        ssize_t n = recvmsg(s, &m, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "netlab-udpecho: recvmsg: %s\n", strerror(errno));
            return 1;
        }
        buf[n] = 0;
        /* The address the datagram was sent to (after DNAT): reply from it, too. */
        struct in_pktinfo pi = {0};
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
            if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO)
                memcpy(&pi, CMSG_DATA(c), sizeof pi);
        struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = pi.ipi_addr};
        char mine[32], theirs[32];
        addr_str(&me, mine, sizeof mine);
        addr_str(&peer, theirs, sizeof theirs);
        int len = snprintf(out, sizeof out, "Hello from pod %s\npod address: %s\nclient address: %s\n",
                           host, mine, theirs);
        char obuf[CMSG_SPACE(sizeof(struct in_pktinfo))] = {0};
        struct iovec oiov = {out, (size_t)len};
        struct msghdr om = {.msg_name = &peer, .msg_namelen = sizeof peer, .msg_iov = &oiov,
                            .msg_iovlen = 1, .msg_control = obuf, .msg_controllen = sizeof obuf};
        struct cmsghdr *oc = CMSG_FIRSTHDR(&om);
        oc->cmsg_level = IPPROTO_IP;
        oc->cmsg_type = IP_PKTINFO;
        oc->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
        struct in_pktinfo opi = {.ipi_spec_dst = pi.ipi_addr};
        memcpy(CMSG_DATA(oc), &opi, sizeof opi);
        if (sendmsg(s, &om, 0) < 0)
            fprintf(stderr, "netlab-udpecho: reply to %s: %s\n", theirs, strerror(errno));
        printf("%s %zd bytes\n", theirs, n);
        fflush(stdout);
    }
}

static int send_to(const char *target, int sport, double timeout, int count) {
    char ip[64];
    const char *colon = strrchr(target, ':');
    if (!colon || colon - target >= (long)sizeof ip) {
        fprintf(stderr, "netlab-udpecho: --send: '%s' is not IP:PORT\n", target);
        return 2;
    }
    memcpy(ip, target, colon - target);
    ip[colon - target] = 0;
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
    if (inet_pton(AF_INET, ip, &to.sin_addr) != 1 || !to.sin_port) {
        fprintf(stderr, "netlab-udpecho: --send: '%s' is not IP:PORT\n", target);
        return 2;
    }
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (sport) {
        struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(sport)};
        if (bind(s, (struct sockaddr *)&me, sizeof me) < 0) {
            fprintf(stderr, "netlab-udpecho: bind source port %d: %s\n", sport, strerror(errno));
            return 1;
        }
    }
    /* Connected, so that an ICMP port unreachable comes back as ECONNREFUSED. */
    if (connect(s, (struct sockaddr *)&to, sizeof to) < 0) {
        fprintf(stderr, "netlab-udpecho: connect %s: %s\n", target, strerror(errno));
        return 7;
    }
    int rc = 0;
    for (int i = 0; i < count; i++) {
        char msg[64], buf[1500];
        int len = snprintf(msg, sizeof msg, "ping %d\n", i);
        if (send(s, msg, len, 0) < 0) {
            fprintf(stderr, "netlab-udpecho: send to %s: %s\n", target, strerror(errno));
            return errno == ECONNREFUSED ? 7 : 1;
        }
        struct pollfd p = {s, POLLIN, 0};
        int r = poll(&p, 1, (int)(timeout * 1000));
        if (r <= 0) {
            fprintf(stderr, "netlab-udpecho: no answer from %s within %.1fs\n", target, timeout);
            rc = 1;
            continue;
        }
        ssize_t n = recv(s, buf, sizeof buf - 1, 0);
        if (n < 0) {
            fprintf(stderr, "netlab-udpecho: %s: %s\n", target, strerror(errno));
            return errno == ECONNREFUSED ? 7 : 1;
        }
        buf[n] = 0;
        fputs(buf, stdout);
        fflush(stdout);
    }
    return rc;
}

int main(int argc, char **argv) {
    int port = 5353, sport = 0, count = 1;
    double timeout = 2.0;
    const char *target = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--send") == 0 && i + 1 < argc)
            target = argv[++i];
        else if (strcmp(argv[i], "--sport") == 0 && i + 1 < argc)
            sport = atoi(argv[++i]);
        else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
            timeout = atof(argv[++i]);
        else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
            count = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: netlab-udpecho [--port N] | --send IP:PORT [--sport N] "
                            "[--timeout SECONDS] [--count N]\n");
            return 2;
        }
    }
    if (port <= 0 || port > 65535 || sport < 0 || sport > 65535 || count < 1 || timeout <= 0) {
        fprintf(stderr, "netlab-udpecho: a port, count or timeout is out of range\n");
        return 2;
    }
    return target ? send_to(target, sport, timeout, count) : serve(port);
}
