// The dataset handle shared by the adapter's files. Not part of pn_dcm.h.
#ifndef PN_DCM_DATASET_INTERNAL_H
#define PN_DCM_DATASET_INTERNAL_H

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcfilefo.h>

#include <cstdint>
#include <string>
#include <sys/types.h>
#include <unistd.h>
#include <vector>

// One of: a loaded file (ff owns item), a dataset of our own (owned is
// item), or a view of a sequence item inside another handle (owns nothing;
// valid while that handle lives).
struct pn_dcm_ds {
	DcmFileFormat *ff = nullptr;
	DcmItem *owned = nullptr;
	DcmItem *item = nullptr;
	int scratch_fd = -1; // an inflated deflated dataset, read by dcmtk

	pn_dcm_ds() = default;
	pn_dcm_ds(const pn_dcm_ds &) = delete;
	pn_dcm_ds &operator=(const pn_dcm_ds &) = delete;
	~pn_dcm_ds()
	{
		delete ff;
		delete owned;
		if (scratch_fd >= 0)
			close(scratch_fd);
	}
};

// Reads `obj` (a file with its meta header, or a bare dataset) whole from
// `in`, as DcmFileFormat::loadFile() does: values longer than max_read
// stay in the stream if it can give them later. Returns 0 or -EBADMSG.
int pn_dcm_read(DcmObject &obj, DcmInputStream &in, E_TransferSyntax xfer, Uint32 max_read);

// Inflates the raw deflate stream in fd from `offset` into an unnamed
// scratch file in `dir`, *ret_fd (gone when closed). More than `max` bytes:
// -E2BIG. 0, -EBADMSG, -E2BIG, -ENOMEM or the -errno of reading or writing.
int pn_dcm_inflate_scratch(int fd, off_t offset, const std::string &dir, uint64_t max, int *ret_fd);

// Every non-empty text value (SH, LO, ST, LT, UC, UT, PN) of an item and
// its sequences, in order; `raw` points into the element.
struct pn_dcm_text_value {
	DcmElement *el;
	char *raw;
	Uint32 len;
};
void pn_dcm_text_values(DcmItem *item, std::vector<pn_dcm_text_value> &out);

// Appends the encoding of `ds` in `xfer` (explicit lengths) to `out`; with
// group_length, group length elements are computed and written (commands).
// The one encoder behind attribute blobs, commands and C-FIND responses.
// Returns 0, -EINVAL or -ENOMEM.
int pn_dcm_encode(DcmItem &ds, E_TransferSyntax xfer, bool group_length, std::vector<unsigned char> &out);

#endif
