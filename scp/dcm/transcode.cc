// A stored instance in another transfer syntax, as a Part 10 file in
// memory: for a DICOMweb client that asked for a syntax the file is not
// stored in (WADO-RS). Only without loss: decompressing (JPEG, JPEG-LS,
// RLE) or re-encoding losslessly, never a lossy encoding.
#include "pn_dcm.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcostrma.h>
#include <dcmtk/dcmdata/dcxfer.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <sys/stat.h>

#include "dataset_internal.h"
#include "guard_internal.h"
#include "util_internal.h"

namespace
{

// dcmtk's output stream into a growing string.
class StringConsumer : public DcmConsumer
{
      public:
	std::string out;
	OFBool good() const override
	{
		return OFTrue;
	}
	OFCondition status() const override
	{
		return EC_Normal;
	}
	OFBool isFlushed() const override
	{
		return OFTrue;
	}
	offile_off_t avail() const override
	{
		return 1 << 20;
	}
	offile_off_t write(const void *buf, offile_off_t len) override
	{
		out.append(static_cast<const char *>(buf), (size_t)len);
		return len;
	}
	void flush() override
	{
	}
};

// The base class's constructor is protected: a stream over our consumer.
class StringStream : public DcmOutputStream
{
      public:
	explicit StringStream(StringConsumer *c) : DcmOutputStream(c)
	{
	}
};

} // namespace

extern "C" bool pn_dcm_ts_lossless_target(const char *ts_uid)
{
	DcmXfer x(ts_uid);
	if (x.getXfer() == EXS_Unknown)
		return false;
	return x.isNotEncapsulated() || x.isLossless();
}

extern "C" int pn_dcm_file_transcode(const char *path, const char *ts_uid, pn_dcm_buf *out)
{
	out->data = nullptr;
	out->len = 0;
	try {
		E_TransferSyntax target = DcmXfer(ts_uid).getXfer();
		if (target == EXS_Unknown || !pn_dcm_ts_lossless_target(ts_uid))
			return -ENOTSUP;
		std::unique_ptr<DcmFileFormat> ff;
		int lrc = load_stored_file(path, ff);
		if (lrc < 0)
			return lrc;
		DcmDataset *ds = ff->getDataset();
		DcmXfer have(ds->getOriginalXfer());
		// Compressed to compressed goes through native pixels first.
		if (!have.isNotEncapsulated() && have.getXfer() != target &&
		    ds->chooseRepresentation(EXS_LittleEndianExplicit, NULL).bad())
			return -ENOTSUP;
		if (ds->chooseRepresentation(target, NULL).bad() || !ds->canWriteXfer(target))
			return -ENOTSUP;
		StringConsumer sink;
		StringStream os(&sink);
		ff->transferInit();
		OFCondition c = ff->write(os, target, EET_ExplicitLength, NULL, EGL_recalcGL, EPD_noChange, 0, 0, 0,
		                          EWM_updateMeta);
		ff->transferEnd();
		os.flush();
		if (c.bad())
			return -ENOTSUP;
		out->data = malloc(sink.out.size() ? sink.out.size() : 1);
		if (!out->data)
			return -ENOMEM;
		memcpy(out->data, sink.out.data(), sink.out.size());
		out->len = sink.out.size();
		return 0;
	} catch (...) {
		free(out->data);
		out->data = nullptr;
		return -ENOMEM;
	}
}

extern "C" const char *pn_dcm_ts_name(const char *ts_uid)
{
	DcmXfer x(ts_uid);
	return x.getXfer() == EXS_Unknown ? nullptr : x.getXferName();
}
