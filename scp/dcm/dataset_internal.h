// The dataset handle shared by the adapter's files. Not part of pn_dcm.h.
#ifndef PN_DCM_DATASET_INTERNAL_H
#define PN_DCM_DATASET_INTERNAL_H

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcfilefo.h>

// One of: a loaded file (ff owns item), a dataset of our own (owned is
// item), or a view of a sequence item inside another handle (owns nothing;
// valid while that handle lives).
struct pn_dcm_ds {
	DcmFileFormat *ff = nullptr;
	DcmItem *owned = nullptr;
	DcmItem *item = nullptr;

	pn_dcm_ds() = default;
	pn_dcm_ds(const pn_dcm_ds &) = delete;
	pn_dcm_ds &operator=(const pn_dcm_ds &) = delete;
	~pn_dcm_ds()
	{
		delete ff;
		delete owned;
	}
};

#endif
