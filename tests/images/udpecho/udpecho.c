/*
 * flotilla-udpecho: answers every UDP datagram on PORT (default 9999) with one
 * datagram "<hostname> <payload>", the payload copied byte for byte (so "hi\n"
 * gets "<hostname> hi\n"), sent back to the sender's address and port.
 *
 * Debian's busybox-static has no UDP server (no udpsvd, and its nc has no -u),
 * hence this. One socket and a recvfrom/sendto loop: any number of clients,
 * one after another or at once, each gets its own answers. Exits 0 at once on
 * SIGTERM or SIGINT, which PID 1 would otherwise ignore.
 *
 * `udpecho -s [PORT]` answers "<sender's address> <payload>" instead (the
 * address as the server saw it, IPv4 as a.b.c.d): for tests of whose address
 * reaches a task.
 *
 * `udpecho -c HOST PORT PAYLOAD` is a client for tests that exec into a
 * container (busybox has no UDP client either): it sends PAYLOAD as one
 * datagram, writes the first answer to stdout and exits 0, or exits 1 after
 * 2 seconds without one. HOST is an address or a name (/etc/hosts, DNS).
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_DGRAM 65507

static void on_signal(int sig) {
    (void)sig;
    _exit(0);
}

/* Dual-stack when the container has IPv6, plain IPv4 when it has not. */
static int bind_any(int port) {
    int fd = socket(AF_INET6, SOCK_DGRAM, 0);
    if (fd >= 0) {
        int off = 0;
        struct sockaddr_in6 a6;
        memset(&a6, 0, sizeof a6);
        a6.sin6_family = AF_INET6;
        a6.sin6_addr = in6addr_any;
        a6.sin6_port = htons(port);
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) == 0 &&
            bind(fd, (struct sockaddr *)&a6, sizeof a6) == 0)
            return fd;
        close(fd);
    }
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("udpecho: socket");
        exit(1);
    }
    struct sockaddr_in a4;
    memset(&a4, 0, sizeof a4);
    a4.sin_family = AF_INET;
    a4.sin_addr.s_addr = htonl(INADDR_ANY);
    a4.sin_port = htons(port);
    if (bind(fd, (struct sockaddr *)&a4, sizeof a4) != 0) {
        perror("udpecho: bind");
        exit(1);
    }
    return fd;
}

static int client(const char *host, const char *port, const char *payload) {
    struct addrinfo hints, *res;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_DGRAM;
    int err = getaddrinfo(host, port, &hints, &res);
    if (err != 0) {
        fprintf(stderr, "udpecho: %s: %s\n", host, gai_strerror(err));
        return 1;
    }
    int fd = socket(res->ai_family, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        perror("udpecho: connect");
        return 1;
    }
    freeaddrinfo(res);
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (send(fd, payload, strlen(payload), 0) < 0) {
        perror("udpecho: send");
        return 1;
    }
    static char in[MAX_DGRAM];
    ssize_t n = recv(fd, in, sizeof in, 0);
    if (n < 0) {
        perror("udpecho: no answer");
        return 1;
    }
    fwrite(in, 1, (size_t)n, stdout);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* The sender's address as text; an IPv4-mapped IPv6 one as plain IPv4. */
static void sender(const struct sockaddr_storage *peer, char *text, size_t len) {
    if (peer->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)peer)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            inet_ntop(AF_INET, &a->s6_addr[12], text, len);
        else
            inet_ntop(AF_INET6, a, text, len);
    } else {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, text, len);
    }
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "-c") == 0)
        return client(argv[2], argv[3], argv[4]);
    int from = argc > 1 && strcmp(argv[1], "-s") == 0;
    if (from) {
        argc--;
        argv++;
    }
    int port = argc > 1 ? atoi(argv[1]) : 9999;
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "usage: udpecho [-s] [PORT] | udpecho -c HOST PORT PAYLOAD\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    static char host[256];
    if (gethostname(host, sizeof host - 1) != 0)
        strcpy(host, "unknown");
    size_t hlen = strlen(host);
    static char out[MAX_DGRAM];
    memcpy(out, host, hlen);
    out[hlen] = ' ';
    size_t prefix = hlen + 1;

    int fd = bind_any(port);
    fprintf(stderr, "udpecho: %s listening on udp port %d\n", host, port);
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        /* A payload too long to fit after the prefix is cut short. */
        ssize_t n = recvfrom(fd, out + prefix, sizeof out - prefix, MSG_TRUNC,
                             (struct sockaddr *)&peer, &plen);
        if (n < 0)
            continue; /* EINTR, or an ICMP error left by an earlier reply */
        if ((size_t)n > sizeof out - prefix)
            n = (ssize_t)(sizeof out - prefix);
        if (from) {
            static char reply[MAX_DGRAM];
            char addr[INET6_ADDRSTRLEN];
            sender(&peer, addr, sizeof addr);
            size_t alen = strlen(addr);
            size_t body = (size_t)n;
            if (alen + 1 + body > sizeof reply)
                body = sizeof reply - alen - 1;
            memcpy(reply, addr, alen);
            reply[alen] = ' ';
            memcpy(reply + alen + 1, out + prefix, body);
            sendto(fd, reply, alen + 1 + body, 0, (struct sockaddr *)&peer, plen);
            continue;
        }
        sendto(fd, out, prefix + (size_t)n, 0, (struct sockaddr *)&peer, plen);
    }
}
