// The association handle shared by the adapter's files. Not part of pn_dcm.h.
#ifndef PN_DCM_ASSOC_INTERNAL_H
#define PN_DCM_ASSOC_INTERNAL_H

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dimse.h>

struct pn_dcm_assoc {
	T_ASC_Association *assoc;
	int fd;   // ours until dcmtk owns it
	int sock; // the socket, for its timeouts (not owned)
	int data_timeout;
	bool broken;         // no orderly end possible: just close
	T_DIMSE_Message msg; // the command being served
};

#endif
