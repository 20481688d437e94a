/* A hostile configuration file: the node must refuse it with a message (or
 * take it), never crash, leak or read out of bounds. */
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#define CHECK(x)                                                                                                       \
	do {                                                                                                           \
		if (!(x))                                                                                              \
			abort();                                                                                       \
	} while (0)

/* A peer's host name is resolved while loading: no name the fuzzer makes
 * up may reach a DNS server. Our definition wins over the C library's. */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
	(void)node;
	(void)service;
	(void)hints;
	*res = NULL;
	return EAI_NONAME;
}

void freeaddrinfo(struct addrinfo *res)
{
	(void)res;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[64];
	if (!path[0]) {
		snprintf(path, sizeof(path), "/tmp/pn_fuzz_config_%d.conf", (int)getpid());
	}
	FILE *f = fopen(path, "wb");
	if (!f)
		return 0;
	fwrite(data, 1, size, f);
	fclose(f);
	pn_config *c = NULL;
	char err[512] = "";
	int rc = pn_config_load(path, &c, err, sizeof(err));
	if (rc == 0) {
		CHECK(c != NULL);
		CHECK(c->port >= 0 && c->port <= 65535 && c->workers >= 1);
		for (size_t i = 0; i < c->n_peers; i++)
			CHECK(pn_ae_title_valid(c->peers[i].ae_title));
		pn_config_free(c);
	} else {
		CHECK(c == NULL && err[0] != '\0');
	}
	return 0;
}
