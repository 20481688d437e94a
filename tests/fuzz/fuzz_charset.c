/* Hostile bytes into the Specific Character Set decoder: whatever the value
 * and the declared character set, the output is valid UTF-8, without NUL. */
#include <stdlib.h>

/* CHECK() vanishes under NDEBUG; a fuzz check must not */
#define CHECK(x)                                                                                                       \
	do {                                                                                                           \
		if (!(x))                                                                                              \
			abort();                                                                                       \
	} while (0)
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "charset.h"

static int valid_utf8(const unsigned char *s)
{
	size_t n = strlen((const char *)s);
	while (n > 0) {
		size_t len = pn_utf8_sequence(s, n);
		if (len == 0)
			return 0;
		s += len;
		n -= len;
	}
	return 1;
}

/* First byte: which known character set (or a hostile one), then the value. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const specs[] = {
	    NULL,
	    "ISO_IR 100",
	    "ISO_IR 192",
	    "GB18030",
	    "GBK",
	    "ISO_IR 13",
	    "ISO_IR 126",
	    "\\ISO 2022 IR 87",
	    "ISO 2022 IR 13\\ISO 2022 IR 87",
	    "\\ISO 2022 IR 149",
	    "\\ISO 2022 IR 58",
	    "ISO 2022 IR 6\\ISO 2022 IR 100\\ISO 2022 IR 144",
	    "\\ISO 2022 IR 87\\ISO 2022 IR 159",
	};
	if (size < 1)
		return 0;
	size_t which = data[0] % (sizeof(specs) / sizeof(specs[0]) + 1);
	char hostile[65];
	const char *spec;
	if (which < sizeof(specs) / sizeof(specs[0])) {
		spec = specs[which];
	} else { /* the character set value itself from the network */
		size_t n = size - 1 < 64 ? size - 1 : 64;
		memcpy(hostile, data + 1, n);
		hostile[n] = '\0';
		spec = hostile;
	}
	pn_charset *cs = NULL;
	if (pn_charset_create(spec, &cs) < 0)
		return 0;
	char *out = NULL;
	int rc = pn_charset_to_utf8(cs, (const char *)data + 1, size - 1, &out);
	if (rc != -12) {
		CHECK(out != NULL);
		CHECK(valid_utf8((const unsigned char *)out));
		free(out);
	}
	pn_charset_free(cs);
	return 0;
}
