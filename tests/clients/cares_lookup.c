/* Tiny ares_getaddrinfo client for the real-client tests (tests/real_clients.rs), built by the
 * test against the system c-ares (Debian's libc-ares-dev): `cc cares_lookup.c -lcares`.
 * The channel is set up with ares_init, so it reads /etc/resolv.conf, LOCALDOMAIN and
 * RES_OPTIONS like any c-ares application (Envoy, pycares, grpc's c-ares resolver).
 *
 * usage: cares_lookup NAME [inet|inet6|unspec]
 *        cares_lookup --version
 * prints "canon NAME" (the question of the reply that gave the addresses: ares_addrinfo.name
 * with ARES_AI_CANONNAME) and one "addr ADDRESS" line per result and exits 0, or prints
 * "error CODE MESSAGE" and exits 2.
 */
#include <arpa/inet.h>
#include <ares.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>

static int finished, result = -1;

static void done(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	struct ares_addrinfo_node *n;
	char buf[INET6_ADDRSTRLEN];

	(void)arg;
	(void)timeouts;
	finished = 1;
	result = status;
	if (status != ARES_SUCCESS) {
		printf("error %d %s\n", status, ares_strerror(status));
		return;
	}
	printf("canon %s\n", res->name ? res->name : "");
	for (n = res->nodes; n; n = n->ai_next) {
		void *a = n->ai_family == AF_INET
			? (void *)&((struct sockaddr_in *)n->ai_addr)->sin_addr
			: (void *)&((struct sockaddr_in6 *)n->ai_addr)->sin6_addr;
		if (inet_ntop(n->ai_family, a, buf, sizeof buf))
			printf("addr %s\n", buf);
	}
	ares_freeaddrinfo(res);
}

int main(int argc, char **argv)
{
	struct ares_addrinfo_hints hints;
	ares_channel channel;
	int rc;

	if (argc < 2) {
		fprintf(stderr, "usage: cares_lookup NAME [inet|inet6|unspec]\n");
		return 64;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("%s\n", ares_version(NULL));
		return 0;
	}
	if ((rc = ares_library_init(ARES_LIB_INIT_ALL)) != ARES_SUCCESS ||
	    (rc = ares_init(&channel)) != ARES_SUCCESS) {
		printf("error %d %s\n", rc, ares_strerror(rc));
		return 2;
	}
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	if (argc > 2 && !strcmp(argv[2], "inet"))
		hints.ai_family = AF_INET;
	else if (argc > 2 && !strcmp(argv[2], "inet6"))
		hints.ai_family = AF_INET6;
	hints.ai_flags = ARES_AI_CANONNAME;

	ares_getaddrinfo(channel, argv[1], NULL, &hints, done, NULL);
	/* The classic select loop: available in every c-ares version. */
	while (!finished) {
		fd_set readers, writers;
		struct timeval tv, *tvp;
		int nfds;

		FD_ZERO(&readers);
		FD_ZERO(&writers);
		nfds = ares_fds(channel, &readers, &writers);
		if (nfds == 0)
			break;
		tvp = ares_timeout(channel, NULL, &tv);
		select(nfds, &readers, &writers, NULL, tvp);
		ares_process(channel, &readers, &writers);
	}
	ares_destroy(channel);
	ares_library_cleanup();
	return result == ARES_SUCCESS ? 0 : 2;
}
