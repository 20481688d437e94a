// Stored files read back by the adapter (retrieval's conversions, WADO-RS
// conversions, pictures, frames): one way to parse them, guarded. Not in
// guard.cc, which replaces the allocation functions.
#include <cerrno>
#include <sys/stat.h>

#include "guard_internal.h"
#include "pn_dcm.h"
#include "util_internal.h"

int load_stored_file(const char *path, std::unique_ptr<DcmFileFormat> &ff)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return errno == ENOENT || errno == ENOTDIR ? -ENOENT : -EBADMSG;
	if (!S_ISREG(st.st_mode))
		return -EBADMSG;
	pn_dcm_register_codecs();
	ff.reset(new DcmFileFormat());
	ParseGuard guard;
	try {
		if (ff->loadFile(path).bad() || guard.tripped())
			return -EBADMSG;
	} catch (const std::bad_alloc &) {
		if (!guard.tripped())
			throw;
		return -EBADMSG;
	}
	DcmDataset *ds = ff->getDataset();
	return ds && !ds->isEmpty() ? 0 : -EBADMSG;
}
