/* Which level of the patient/study/series/instance hierarchy each
 * attribute belongs to, after the IODs' Patient, General Study, Patient
 * Study, General Series, General Equipment and Frame of Reference modules.
 * Anything not listed is an instance attribute. */
#ifndef PN_ATTR_LEVELS_H
#define PN_ATTR_LEVELS_H

#include <stdint.h>

#define PN_TAG(g, e) (((uint32_t)(g) << 16) | (uint32_t)(e))

/* Attributes kept at every level (Specific Character Set). */
#define PN_LEVEL_EVERY (-2)
/* Attributes kept at no level (bulk and group lengths). */
#define PN_LEVEL_NONE (-1)

/* A PN_LEVEL_* value from scp/dcm/pn_dcm.h, or one of the two above. */
int pn_attr_level(uint32_t tag);

#endif
