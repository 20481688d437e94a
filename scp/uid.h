/* UID syntax, PS3.5 9.1: at most 64 characters, digits and dots only,
 * components non-empty and without leading zeros (except "0" itself). */
#ifndef PN_UID_H
#define PN_UID_H

#include <stdbool.h>

#ifndef PN_UID_MAX
#define PN_UID_MAX 64 /* also in pn_dcm.h, which stands alone */
#endif

bool pn_uid_valid(const char *uid);

#endif
