/* Tiny getaddrinfo client for the real-client tests (tests/real_clients.rs).
 * Built with `musl-gcc -static` so it runs musl's resolver (src/network/lookup_name.c)
 * whatever the host libc is.
 *
 * usage: musl_lookup NAME [inet|inet6|unspec]
 * prints "canon NAME" and one "addr ADDRESS" line per result and exits 0, or prints
 * "error CODE MESSAGE" and exits 2.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	struct addrinfo hints, *res, *ai;
	char buf[INET6_ADDRSTRLEN];
	int rc;

	if (argc < 2) {
		fprintf(stderr, "usage: musl_lookup NAME [inet|inet6|unspec]\n");
		return 64;
	}
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	if (argc > 2 && !strcmp(argv[2], "inet"))
		hints.ai_family = AF_INET;
	else if (argc > 2 && !strcmp(argv[2], "inet6"))
		hints.ai_family = AF_INET6;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_CANONNAME;

	rc = getaddrinfo(argv[1], NULL, &hints, &res);
	if (rc) {
		printf("error %d %s\n", rc, gai_strerror(rc));
		return 2;
	}
	printf("canon %s\n", res->ai_canonname ? res->ai_canonname : "");
	for (ai = res; ai; ai = ai->ai_next) {
		void *a = ai->ai_family == AF_INET
			? (void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
			: (void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
		if (inet_ntop(ai->ai_family, a, buf, sizeof buf))
			printf("addr %s\n", buf);
	}
	freeaddrinfo(res);
	return 0;
}
