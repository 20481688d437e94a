// Small helpers shared by the adapter's files. Not part of pn_dcm.h.
#ifndef PN_DCM_UTIL_INTERNAL_H
#define PN_DCM_UTIL_INTERNAL_H

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcbytstr.h>
#include <dcmtk/dcmdata/dcelem.h>
#include <dcmtk/dcmdata/dcvr.h>
#include <dcmtk/dcmnet/dimse.h>
#include <dcmtk/dcmnet/dul.h>

#include "pn_dcm.h"

#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <sys/time.h>

// The codecs for decompressing stored instances and lossless re-encoding;
// once per process (retrieve.cc).
void pn_dcm_register_codecs();

// A DIMSE failure as a negative errno: timed out, or anything else.
static inline int condition_to_errno(const OFCondition &c)
{
	if (c == DIMSE_NODATAAVAILABLE || c == DUL_READTIMEOUT)
		return -ETIMEDOUT;
	return -EPROTO;
}

// What DIMSE_receiveCommand's condition says of the association: 0 a
// command came, PN_DCM_RELEASED / PN_DCM_ABORTED (pn_dcm.h) the peer ended
// it, else a negative errno.
static inline int receive_outcome(const OFCondition &c)
{
	if (c == DUL_PEERREQUESTEDRELEASE)
		return PN_DCM_RELEASED;
	if (c == DUL_PEERABORTEDASSOCIATION || c == DUL_NETWORKCLOSED)
		return PN_DCM_ABORTED;
	return c.good() ? 0 : condition_to_errno(c);
}

// dcmtk times only the wait for the first byte of a PDU and then reads the
// rest blocking: a peer that stops half-way would hold the worker forever.
// Kernel timeouts bound every read and write, whatever dcmtk does.
static inline void set_socket_timeouts(int fd, int seconds)
{
	struct timeval tv;
	tv.tv_sec = seconds;
	tv.tv_usec = 0;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// dcmtk's C strings stop at a NUL, so "1.2.3<NUL>junk" would read as the
// valid UID "1.2.3". A UI value with a NUL before its padding is given whole,
// its NULs shown as '?', so that every check of the UID refuses it (PS3.5
// 9.1: digits and dots only). Other values are left as they are.
static inline void show_uid_nuls(DcmElement *el, OFString &value)
{
	if (!el || el->ident() != EVR_UI)
		return;
	char *raw = nullptr;
	Uint32 len = 0;
	if (OFstatic_cast(DcmByteString *, el)->getString(raw, len).bad() || !raw)
		return;
	while (len > 0 && (raw[len - 1] == '\0' || raw[len - 1] == ' ')) // padding
		len--;
	if (!memchr(raw, '\0', len))
		return;
	value.assign(raw, len);
	for (size_t i = 0; i < value.length(); i++)
		if (value[i] == '\0')
			value[i] = '?';
}

// The VRs whose values are text in the Specific Character Set.
static inline bool is_text_vr(DcmEVR vr)
{
	switch (vr) {
	case EVR_SH:
	case EVR_LO:
	case EVR_ST:
	case EVR_LT:
	case EVR_UC:
	case EVR_UT:
	case EVR_PN:
		return true;
	default:
		return false;
	}
}

#endif
