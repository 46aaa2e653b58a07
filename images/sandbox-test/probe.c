/* brig-probe: tries things a hostile tenant would, and prints what happened.
 * Built static into the test image only (images/sandbox-test/build.sh).
 *   brig-probe ptrace PID     PTRACE_ATTACH to PID
 *   brig-probe rawsock        open an AF_INET raw socket
 *   brig-probe euid           print the effective uid (installed setuid-root too)
 *   brig-probe openfiles N    open /dev/null N times, print how many succeeded
 *   brig-probe sysvshm N      make N SysV segments of 1 MiB, touch every page,
 *                             detach and leave them behind; print how many
 *   brig-probe iouring        io_uring_setup with 4 entries
 *   brig-probe mq             open a new POSIX message queue
 *   brig-probe relay          connect to the agent's relay socket and greet
 *                             it, then try to bind its name
 * Prints "ok" on success or "denied: <errno text>", exits 0 either way. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <mqueue.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/time.h>
#include <sys/un.h>
#include <fcntl.h>
#include <unistd.h>

static int report(int rc) {
    if (rc < 0) printf("denied: %s\n", strerror(errno));
    else printf("ok\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "ptrace") == 0)
        return report((int)ptrace(PTRACE_ATTACH, atoi(argv[2]), NULL, NULL));
    if (argc == 2 && strcmp(argv[1], "rawsock") == 0)
        return report(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    if (argc == 2 && strcmp(argv[1], "euid") == 0) {
        printf("euid=%d uid=%d\n", (int)geteuid(), (int)getuid());
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "openfiles") == 0) {
        int want = atoi(argv[2]), opened = 0;
        while (opened < want && open("/dev/null", O_RDONLY) >= 0) opened++;
        printf("opened=%d\n", opened);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "sysvshm") == 0) {
        int want = atoi(argv[2]), made = 0;
        for (; made < want; made++) {
            int id = shmget(IPC_PRIVATE, 1 << 20, IPC_CREAT | 0600);
            if (id < 0) break;
            char *at = shmat(id, NULL, 0);
            if (at == (void *)-1) break;
            memset(at, 1, 1 << 20);
            shmdt(at);
        }
        printf("segments=%d\n", made);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "iouring") == 0) {
        unsigned char params[120] = {0}; /* struct io_uring_params */
        return report((int)syscall(425 /* io_uring_setup */, 4, params));
    }
    if (argc == 2 && strcmp(argv[1], "mq") == 0) {
        int rc = (int)mq_open("/brig-probe", O_CREAT | O_RDWR, 0600, NULL);
        if (rc >= 0) mq_unlink("/brig-probe");
        return report(rc);
    }
    if (argc == 2 && strcmp(argv[1], "relay") == 0) {
        const char *name = "brig-agent-relay";
        struct sockaddr_un addr;
        memset(&addr, 0, sizeof addr);
        addr.sun_family = AF_UNIX;
        memcpy(addr.sun_path + 1, name, strlen(name));
        socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        printf("connect: ");
        report(connect(fd, (struct sockaddr *)&addr, len));
        /* A Hello frame: len 7, kind 1, request 0, version 1. */
        unsigned char hello[] = {0, 0, 0, 7, 1, 0, 0, 0, 0, 0, 1};
        send(fd, hello, sizeof hello, MSG_NOSIGNAL);
        struct timeval tv = {3, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char buf[64];
        ssize_t n = read(fd, buf, sizeof buf);
        /* Closed or reset: unheard. A timeout would mean the agent kept it. */
        if (n > 0) printf("read: answered\n");
        else if (n == 0 || errno == ECONNRESET) printf("read: dropped\n");
        else printf("read: %s\n", strerror(errno));
        int squat = socket(AF_UNIX, SOCK_STREAM, 0);
        printf("bind: ");
        return report(bind(squat, (struct sockaddr *)&addr, len));
    }
    fprintf(stderr, "usage: brig-probe ptrace PID | rawsock | euid | openfiles N | sysvshm N | iouring | mq | relay\n");
    return 2;
}
