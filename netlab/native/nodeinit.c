/*
 * netlab-nodeinit: a node's init, the part systemd plays on the seed's hosts.
 *
 *   netlab-nodeinit HOSTNAME NETNS_PATH INIT_PIDFILE [--bind SRC DST]... \
 *       @NAME PIDFILE LOG CWD PROG [ARG...]  [@NAME PIDFILE LOG CWD PROG [ARG...]]...
 *
 * Joins the node's pinned network namespace, takes a mount, UTS and PID namespace of its
 * own for the node (host name HOSTNAME), and forks the node's PID 1, which mounts a /proc
 * of the node's PID namespace and a /sys of its netns, makes the binds (the node's own
 * /run/flannel), and starts every daemon (@NAME ...): stdout and stderr appended to LOG,
 * working directory CWD ("-": unchanged), its host-visible pid written to PIDFILE before it
 * execs PROG. A daemon that exits or is killed is started again after a back-off (0.5 s,
 * doubling to 5 s; back to 0.5 s once it ran 10 s). Orphans (pods whose kubelet died) are
 * reaped. SIGTERM: every daemon gets SIGTERM, then SIGKILL after 5 s, and init exits; the
 * kernel then kills whatever is left in the node's PID namespace (its pods).
 *
 * The starting process exits 0 once PID 1 has started the daemons, after writing PID 1's
 * host pid to INIT_PIDFILE (1 if the node could not be set up). Mounts stay in the node:
 * every mount is made a slave of the host's except /run/netns, which stays shared so that
 * the kubelet's pod pins (made in here) are seen by `ip netns` and `netlab down` outside.
 *
 * Each daemon gets NETLAB_HOST_PID=<its pid as the host sees it> (pid files, heartbeats)
 * and NETLAB_HOST_PROC_FD=<an O_PATH descriptor of the host's /proc> (host pids of pods).
 * Static and small: one runs per node.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_DAEMONS 16
#define MAX_BINDS 8
#define BACKOFF_START 0.5
#define BACKOFF_MAX 5.0
#define BACKOFF_RESET 10.0
#define STOP_GRACE 5.0

struct daemon {
    const char *name, *pidfile, *log, *cwd;
    char **argv;
    pid_t pid;      /* in the node's PID namespace; 0: not running */
    double started; /* monotonic */
    double due;     /* restart not before (monotonic) */
    double backoff;
};

static struct daemon daemons[MAX_DAEMONS];
static int ndaemons;
static const char *binds[MAX_BINDS][2];
static int nbinds;
static int hostproc = -1; /* the host's /proc: pids as the host sees them */
static char *args_start, *args_end; /* our argv strings, reused for PID 1's title */

static void die(const char *what) {
    fprintf(stderr, "netlab-nodeinit: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void write_pidfile(const char *path, long pid) {
    char tmp[4096], buf[32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, pid);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return; /* the run directory is gone (down is under way): nothing to record */
    int n = snprintf(buf, sizeof buf, "%ld\n", pid);
    if (write(fd, buf, n) != n) { /* best effort */ }
    close(fd);
    if (rename(tmp, path) < 0)
        unlink(tmp);
}

/* Our own pid as the host sees it: the host /proc's "self" resolves in its PID namespace. */
static long host_pid_self(void) {
    char buf[32];
    ssize_t n = readlinkat(hostproc, "self", buf, sizeof buf - 1);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    return atol(buf);
}

/* A child's pid as the host sees it: a pidfd's fdinfo read through the host's /proc. */
static long host_pid_of(pid_t pid) {
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pfd < 0)
        return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "self/fdinfo/%d", pfd);
    long out = -1;
    int fd = openat(hostproc, path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        if (n > 0) {
            buf[n] = 0;
            char *p = strstr(buf, "\nPid:");
            if (p)
                out = atol(p + 6);
        }
        close(fd);
    }
    close(pfd);
    return out;
}

/* Every mount a slave of the host's (nothing we mount here shows outside), except
 * /run/netns and the pins in it: pod pins made by the kubelet in here must reach the host. */
static void contain_mounts(void) {
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        die("read /proc/self/mountinfo");
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        char *save = NULL, *tok = strtok_r(line, " ", &save);
        for (int i = 0; tok && i < 4; i++)
            tok = strtok_r(NULL, " ", &save);
        if (!tok)
            continue;
        /* unescape \040 and friends */
        char mp[4096];
        size_t j = 0;
        for (char *p = tok; *p && j < sizeof mp - 1; p++) {
            if (p[0] == '\\' && p[1] >= '0' && p[1] <= '7' && p[2] && p[3]) {
                mp[j++] = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
                p += 3;
            } else {
                mp[j++] = *p;
            }
        }
        mp[j] = 0;
        if (strcmp(mp, "/run/netns") == 0 || strncmp(mp, "/run/netns/", 11) == 0)
            continue;
        mount(NULL, mp, NULL, MS_SLAVE, NULL); /* EINVAL for a private one: already contained */
    }
    fclose(f);
}

static void start(struct daemon *d) {
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "netlab-nodeinit: fork for %s: %s\n", d->name, strerror(errno));
        d->due = now() + BACKOFF_MAX;
        return;
    }
    if (pid == 0) {
        sigset_t all;
        sigfillset(&all);
        sigprocmask(SIG_UNBLOCK, &all, NULL);
        setsid();
        char hp[32];
        long me = host_pid_self();
        snprintf(hp, sizeof hp, "%ld", me);
        setenv("NETLAB_HOST_PID", hp, 1);
        /* The host's /proc for the daemon too: the kubelet records its pods' host pids. */
        int hpfd = fcntl(hostproc, F_DUPFD, 3); /* without FD_CLOEXEC */
        if (hpfd >= 0) {
            char hf[16];
            snprintf(hf, sizeof hf, "%d", hpfd);
            setenv("NETLAB_HOST_PROC_FD", hf, 1);
        }
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        int log = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (log < 0)
            log = null;
        dup2(null, 0);
        dup2(log, 1);
        dup2(log, 2);
        if (d->cwd[0] && strcmp(d->cwd, "-") != 0 && chdir(d->cwd) < 0)
            fprintf(stderr, "netlab-nodeinit: chdir %s: %s\n", d->cwd, strerror(errno));
        execv(d->argv[0], d->argv);
        fprintf(stderr, "netlab-nodeinit: exec %s: %s\n", d->argv[0], strerror(errno));
        _exit(127);
    }
    d->pid = pid;
    d->started = now();
    /* Written before start() returns, so the pid file names the daemon once `up` sees
     * the node started (and after a restart, before anyone could miss it). */
    if (d->pidfile[0] && strcmp(d->pidfile, "-") != 0) {
        long hp = host_pid_of(pid);
        if (hp > 0)
            write_pidfile(d->pidfile, hp);
    }
}

static void on_exit_of(struct daemon *d, int status, int stopping) {
    double ran = now() - d->started;
    d->pid = 0;
    if (stopping)
        return;
    d->backoff = ran >= BACKOFF_RESET || d->backoff == 0 ? BACKOFF_START
               : (d->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : d->backoff * 2);
    d->due = now() + d->backoff;
    if (WIFSIGNALED(status))
        fprintf(stderr, "netlab-nodeinit: %s killed by signal %d after %.1fs; restarting in %.1fs\n",
                d->name, WTERMSIG(status), ran, d->backoff);
    else
        fprintf(stderr, "netlab-nodeinit: %s exited with status %d after %.1fs; restarting in %.1fs\n",
                d->name, WEXITSTATUS(status), ran, d->backoff);
}

/* Collect every exited child: daemons are scheduled for a restart, orphans just reaped. */
static int reap(int stopping) {
    int status, left = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < ndaemons; i++)
            if (daemons[i].pid == pid)
                on_exit_of(&daemons[i], status, stopping);
    }
    for (int i = 0; i < ndaemons; i++)
        left += daemons[i].pid != 0;
    return left;
}

static void __attribute__((noreturn)) stop_all(void) {
    for (int i = 0; i < ndaemons; i++)
        if (daemons[i].pid)
            kill(daemons[i].pid, SIGTERM);
    double deadline = now() + STOP_GRACE;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    while (reap(1) && now() < deadline) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        sigtimedwait(&set, NULL, &ts);
    }
    for (int i = 0; i < ndaemons; i++)
        if (daemons[i].pid)
            kill(daemons[i].pid, SIGKILL);
    exit(0);
}

static const char *title_host = "";

static char *dup_or_die(const char *s) {
    char *d = strdup(s);
    if (!d)
        die("strdup");
    return d;
}

/* Copy every string we keep out of the argv area, which PID 1 then overwrites. */
static void copy_args(int argc, char **argv) {
    args_start = argv[0];
    args_end = argv[argc - 1] + strlen(argv[argc - 1]) + 1;
    for (int i = 0; i < ndaemons; i++) {
        struct daemon *d = &daemons[i];
        d->name = dup_or_die(d->name);
        d->pidfile = dup_or_die(d->pidfile);
        d->log = dup_or_die(d->log);
        d->cwd = dup_or_die(d->cwd);
        int n = 0;
        while (d->argv[n])
            n++;
        char **a = calloc(n + 1, sizeof *a);
        if (!a)
            die("calloc");
        for (int k = 0; k < n; k++)
            a[k] = dup_or_die(d->argv[k]);
        d->argv = a;
    }
    for (int i = 0; i < nbinds; i++) {
        binds[i][0] = dup_or_die(binds[i][0]);
        binds[i][1] = dup_or_die(binds[i][1]);
    }
}

static void __attribute__((noreturn)) pid1(int ready_fd) {
    /* A /proc of the node's PID namespace (ps shows the node only), a /sys of its netns. */
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        die("mount /proc");
    if (umount2("/sys", MNT_DETACH) == 0 || errno == EINVAL)
        mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    for (int i = 0; i < nbinds; i++)
        if (mount(binds[i][0], binds[i][1], NULL, MS_BIND, NULL) < 0)
            die(binds[i][1]);
    setsid();
    prctl(PR_SET_NAME, "nodeinit", 0, 0, 0);
    /* `ps -ef` in the node shows "nodeinit HOSTNAME" (the daemons' argv were copied). */
    memset(args_start, 0, args_end - args_start);
    snprintf(args_start, args_end - args_start, "nodeinit %s", title_host);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    for (int i = 0; i < ndaemons; i++)
        start(&daemons[i]);
    if (write(ready_fd, "1", 1) < 0) { /* the starter is gone: carry on */ }
    close(ready_fd);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0)
        dup2(null, 0);
    for (;;) {
        double t = now(), wait = 3600;
        for (int i = 0; i < ndaemons; i++) {
            struct daemon *d = &daemons[i];
            if (d->pid == 0 && d->due <= t)
                start(d);
            if (d->pid == 0 && d->due - t < wait)
                wait = d->due - t;
        }
        if (wait < 0.01)
            wait = 0.01;
        struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP)
            stop_all();
        reap(0);
    }
}

static void usage(void) {
    fprintf(stderr, "usage: netlab-nodeinit HOSTNAME NETNS_PATH INIT_PIDFILE [--bind SRC DST]...\n"
                    "           @NAME PIDFILE LOG CWD PROG [ARG...] ...\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 4)
        usage();
    const char *hostname = argv[1], *netns = argv[2], *init_pidfile = argv[3];
    int i = 4;
    while (i < argc && strcmp(argv[i], "--bind") == 0) {
        if (i + 2 >= argc || nbinds == MAX_BINDS)
            usage();
        binds[nbinds][0] = argv[i + 1];
        binds[nbinds][1] = argv[i + 2];
        nbinds++;
        i += 3;
    }
    char *name_at = i < argc ? argv[i] : NULL; /* "@NAME" of the daemon being parsed */
    while (name_at) {
        if (name_at[0] != '@' || i + 4 >= argc || ndaemons == MAX_DAEMONS)
            usage();
        struct daemon *d = &daemons[ndaemons++];
        d->name = name_at + 1;
        d->pidfile = argv[i + 1];
        d->log = argv[i + 2];
        d->cwd = argv[i + 3];
        d->argv = &argv[i + 4];
        int j = i + 4;
        while (j < argc && argv[j][0] != '@')
            j++;
        name_at = j < argc ? argv[j] : NULL;
        argv[j] = NULL; /* ends this daemon's argv (argv[argc] is NULL already) */
        i = j;
    }
    if (ndaemons == 0)
        usage();
    int last = argc - 1; /* argv[j] = NULL above may have cut the last string's pointer only */
    copy_args(last + 1, argv);
    title_host = dup_or_die(hostname);

    hostproc = open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (hostproc < 0)
        die("open /proc");
    int nsfd = open(netns, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0)
        die(netns);
    if (setns(nsfd, CLONE_NEWNET) < 0)
        die("enter the node's network namespace");
    close(nsfd);
    if (unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWPID) < 0)
        die("unshare mount/uts/pid");
    contain_mounts();
    if (sethostname(hostname, strlen(hostname)) < 0)
        die("sethostname");
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        die("pipe");
    pid_t pid = fork();
    if (pid < 0)
        die("fork the node's PID 1");
    if (pid == 0) {
        close(p[0]);
        pid1(p[1]);
    }
    close(p[1]);
    char c;
    if (read(p[0], &c, 1) != 1) {
        fprintf(stderr, "netlab-nodeinit: the node's PID 1 (pid %d) did not start\n", pid);
        return 1;
    }
    write_pidfile(init_pidfile, pid);
    return 0;
}
