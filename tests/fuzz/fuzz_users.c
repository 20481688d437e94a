/* A hostile web users file: refused with a message naming the line, or
 * taken; never a crash, a leak or a read out of bounds. (Checking a
 * password is not fuzzed: crypt(3) with a hash's own cost parameters is the
 * point of the file, and the file is the operator's, not the network's.) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "users.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512] = "";
	pn_web_users *u = NULL;
	int rc = pn_web_users_parse((const char *)data, size, "fuzz", &u, err, sizeof(err));
	if (rc < 0 && (u != NULL || strlen(err) == 0))
		abort();
	pn_web_users_free(u);
	return 0;
}
