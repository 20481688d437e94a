#include "uid.h"

#include <string.h>

bool pn_uid_valid(const char *uid)
{
	size_t n = strnlen(uid, 65);
	if (n == 0 || n > 64)
		return false;
	size_t comp_len = 0;
	bool leading_zero = false;
	for (size_t i = 0; i <= n; i++) {
		char c = uid[i];
		if (c == '.' || c == '\0') {
			if (comp_len == 0 || (leading_zero && comp_len > 1))
				return false;
			comp_len = 0;
			continue;
		}
		if (c < '0' || c > '9')
			return false;
		if (comp_len == 0)
			leading_zero = (c == '0');
		comp_len++;
	}
	return true;
}
