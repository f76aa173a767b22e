/*
 * netlab-pause: a pod's sandbox, the part Kubernetes' pause container plays.
 *
 *   netlab-pause HOSTNAME
 *       Creates the pod's network, UTS and IPC namespaces (unshare), turns IPv6 off in the
 *       new netns (as docker does: no link-local address, no router solicitations, MLD or
 *       DAD flooding every docker0 port; eth0, moved in later, inherits the default), sets
 *       the host name to the pod's name, brings lo up, writes one line to stdout once all that is done (the
 *       kubelet waits for it), then sleeps until SIGTERM/SIGINT. It holds the namespaces:
 *       when it exits and the netns pin is gone, the pod's network is gone.
 *
 *   netlab-pause --enter PID HOSTS_FILE CMD [ARG...]
 *       Starts a container of the pod: joins the net, UTS and IPC namespaces of PID (the
 *       pause), takes a mount namespace of its own in which HOSTS_FILE is bind-mounted over
 *       /etc/hosts (and $NETLAB_SA_DIR, if set, over /var/run/secrets/kubernetes.io/
 *       serviceaccount; $NETLAB_RESOLV, if set, over /etc/resolv.conf; each SRC:DST of
 *       $NETLAB_BINDS: an image's own files), and execs CMD. One small exec instead of nsenter + unshare + mount + sh.
 *
 * Static and tiny on purpose: one runs per pod (the issue asks for <= 1 MiB RSS each).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "netlab-pause: %s: %s\n", what, strerror(errno));
    exit(127);
}

static void on_signal(int sig) {
    (void)sig;
    _exit(0);
}

static void lo_up(void) {
    struct ifreq ifr;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        die("socket");
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        die("get flags of lo");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        die("bring lo up");
    close(s);
}

/* /proc/sys/net is the opener's network namespace: written after unshare, the pod's own. */
static void sysctl_write(const char *path, const char *value) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return; /* a kernel without IPv6 */
        die(path);
    }
    if (write(fd, value, strlen(value)) < 0)
        die(path);
    close(fd);
}

static void __attribute__((noreturn)) sandbox(const char *hostname) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN; /* a kubelet that goes away must not take the pod with it */
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);

    if (unshare(CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC) < 0)
        die("unshare net/uts/ipc");
    sysctl_write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
    sysctl_write("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
    if (sethostname(hostname, strlen(hostname)) < 0)
        die("sethostname");
    lo_up();
    /* Ready: the kubelet reads this line, then we stop holding its pipe. */
    if (write(1, "ready\n", 6) < 0) { /* nobody listening is fine */ }
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2)
            close(null);
    }
    for (;;)
        pause();
}

static void join(const char *pid, const char *ns, int type) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/ns/%s", pid, ns);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(path);
    if (setns(fd, type) < 0)
        die(path);
    close(fd);
}

#define SA_MOUNT "/var/run/secrets/kubernetes.io/serviceaccount"

static int enter(const char *pid, const char *hosts, char **argv) {
    join(pid, "net", CLONE_NEWNET);
    join(pid, "uts", CLONE_NEWUTS);
    join(pid, "ipc", CLONE_NEWIPC);
    if (unshare(CLONE_NEWNS) < 0)
        die("unshare mount namespace");
    /* Like `ip netns exec`: nothing mounted here propagates back. */
    if (mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) < 0)
        die("make / a slave mount");
    /* Our copy of /run/netns would hold every pod's netns pinned when we started, and
     * keep them alive after their pods are gone: a container needs none of them. */
    if (umount2("/run/netns", MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
        die("detach /run/netns");
    /* ...and what lies beneath are the pins' empty files, on which `ip addr` in here
     * prints "Peer netns reference is invalid" for each: hide them, as docker does. */
    if (mount("tmpfs", "/run/netns", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755") < 0
        && errno != ENOENT)
        die("mount a tmpfs over /run/netns");
    /* As `ip netns exec` does: a sysfs of this netns, so /sys/class/net shows eth0. */
    if (umount2("/sys", MNT_DETACH) == 0)
        mount("sysfs", "/sys", "sysfs", 0, NULL);
    if (mount(hosts, "/etc/hosts", NULL, MS_BIND, NULL) < 0)
        die("bind the pod's hosts file over /etc/hosts");
    /* The service-account token, ca.crt and namespace (NETLAB_SA_DIR, from the kubelet),
     * read-only where in-cluster clients look for them. */
    const char *sa = getenv("NETLAB_SA_DIR");
    if (sa && *sa) {
        if (mount(sa, SA_MOUNT, NULL, MS_BIND, NULL) < 0)
            die("bind the service-account directory over " SA_MOUNT);
        mount(NULL, SA_MOUNT, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL);
        unsetenv("NETLAB_SA_DIR");
    }
    /* The kubelet's resolv.conf for dnsPolicy ClusterFirst (unset for Default: the node's). */
    const char *resolv = getenv("NETLAB_RESOLV");
    if (resolv && *resolv) {
        /* A host without /etc/resolv.conf has nothing to bind over: the pod then has no
         * DNS configuration, which is no reason to refuse to start its container. */
        if (mount(resolv, "/etc/resolv.conf", NULL, MS_BIND, NULL) < 0 && errno != ENOENT)
            die("bind the pod's resolv.conf over /etc/resolv.conf");
        unsetenv("NETLAB_RESOLV");
    }
    /* The image's own files (NETLAB_BINDS="SRC:DST;SRC:DST", from the kubelet): nginx's
     * config, lib and log directories, private to this container. */
    const char *binds = getenv("NETLAB_BINDS");
    if (binds && *binds) {
        char *list = strdup(binds), *save = NULL;
        for (char *b = strtok_r(list, ";", &save); b; b = strtok_r(NULL, ";", &save)) {
            char *dst = strchr(b, ':');
            if (!dst)
                continue;
            *dst++ = 0;
            if (mount(b, dst, NULL, MS_BIND, NULL) < 0)
                die(dst);
        }
        free(list);
        unsetenv("NETLAB_BINDS");
    }
    signal(SIGPIPE, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    execvp(argv[0], argv);
    fprintf(stderr, "netlab-pause: exec %s: %s\n", argv[0], strerror(errno));
    return errno == ENOENT ? 127 : 126;
}

int main(int argc, char **argv) {
    if (argc == 2 && argv[1][0] != '-')
        sandbox(argv[1]);
    if (argc >= 5 && strcmp(argv[1], "--enter") == 0)
        return enter(argv[2], argv[3], argv + 4);
    fprintf(stderr, "usage: netlab-pause HOSTNAME\n"
                    "       netlab-pause --enter PID HOSTS_FILE CMD [ARG...]\n");
    return 2;
}
