// Small helpers shared by the adapter's files. Not part of pn_dcm.h.
#ifndef PN_DCM_UTIL_INTERNAL_H
#define PN_DCM_UTIL_INTERNAL_H

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcvr.h>
#include <dcmtk/dcmnet/dimse.h>
#include <dcmtk/dcmnet/dul.h>

#include <cerrno>
#include <sys/socket.h>
#include <sys/time.h>

// A DIMSE failure as a negative errno: timed out, or anything else.
static inline int condition_to_errno(const OFCondition &c)
{
	if (c == DIMSE_NODATAAVAILABLE || c == DUL_READTIMEOUT)
		return -ETIMEDOUT;
	return -EPROTO;
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
