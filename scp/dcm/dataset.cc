// Reading stored instances: attribute values as UTF-8 and per-level blobs.
#include "pn_dcm.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrma.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcistrmf.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcostrmb.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcxfer.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <new>
#include <string>
#include <unistd.h>
#include <vector>

#include "dataset_internal.h"
#include "guard_internal.h"
#include "util_internal.h"

namespace
{

// Values above this stay on disk while we index (pixel data and the like).
const Uint32 k_max_read_length = 4096;

bool is_binary_vr(DcmEVR vr)
{
	switch (vr) {
	case EVR_OB:
	case EVR_OW:
	case EVR_OF:
	case EVR_OD:
	case EVR_OL:
	case EVR_OV:
	case EVR_UN:
	case EVR_ox:
	case EVR_px:
		return true;
	default:
		return false;
	}
}

// An attribute blob: explicit VR little endian, in malloc'ed memory.
int encode(DcmDataset &ds, pn_dcm_buf *out)
{
	out->data = nullptr;
	out->len = 0;
	std::vector<unsigned char> bytes;
	if (ds.card() > 0) {
		int rc = pn_dcm_encode(ds, EXS_LittleEndianExplicit, false, bytes);
		if (rc < 0)
			return rc == -ENOMEM ? rc : -EIO;
	}
	void *buf = malloc(bytes.empty() ? 1 : bytes.size());
	if (!buf)
		return -ENOMEM;
	if (!bytes.empty())
		memcpy(buf, bytes.data(), bytes.size());
	out->data = buf;
	out->len = bytes.size();
	return 0;
}

} // namespace

int pn_dcm_encode(DcmItem &ds, E_TransferSyntax xfer, bool group_length, std::vector<unsigned char> &out)
{
	try {
		if (group_length &&
		    ds.computeGroupLengthAndPadding(EGL_withGL, EPD_noChange, xfer, EET_ExplicitLength).bad())
			return -EINVAL;
		Uint32 len = ds.getLength(xfer, EET_ExplicitLength);
		size_t at = out.size();
		out.resize(at + len);
		if (len == 0)
			return 0;
		DcmOutputBufferStream stream(out.data() + at, (offile_off_t)len);
		ds.transferInit();
		OFCondition c = ds.write(stream, xfer, EET_ExplicitLength, NULL);
		ds.transferEnd();
		void *p = nullptr;
		offile_off_t n = 0;
		stream.flushBuffer(p, n);
		if (c.bad() || (Uint32)n != len) {
			out.resize(at);
			return -EINVAL;
		}
		return 0;
	} catch (const std::bad_alloc &) {
		return -ENOMEM;
	}
}

int pn_dcm_read(DcmObject &obj, DcmInputStream &in, E_TransferSyntax xfer, Uint32 max_read)
{
	ParseGuard guard;
	try {
		obj.transferInit();
		OFCondition c = obj.read(in, xfer, EGL_noChange, max_read);
		obj.transferEnd();
		if (guard.tripped()) // our stream stopped, or a nothrow allocation said no
			return -ELOOP;
		return c.good() ? 0 : -EBADMSG;
	} catch (const std::bad_alloc &) {
		obj.transferEnd();
		return guard.tripped() ? -ELOOP : -ENOMEM;
	}
}

namespace
{

// dcmtk's file producer, which stops reading when the guard says the
// nesting is too deep (guard_internal.h).
class GuardedFileProducer : public DcmFileProducer
{
      public:
	explicit GuardedFileProducer(const char *path) : DcmFileProducer(OFFilename(path))
	{
	}
	OFBool good() const override
	{
		return !stopped_ && DcmFileProducer::good();
	}
	OFCondition status() const override
	{
		return stopped_ ? EC_InvalidStream : DcmFileProducer::status();
	}
	OFBool eos() override
	{
		return stopped_ || DcmFileProducer::eos();
	}
	offile_off_t avail() override
	{
		return stopped_ ? 0 : DcmFileProducer::avail();
	}
	offile_off_t read(void *buf, offile_off_t len) override
	{
		if (stopped_ || (stopped_ = parse_stack_exhausted()))
			return 0;
		return DcmFileProducer::read(buf, len);
	}
	offile_off_t skip(offile_off_t len) override
	{
		if (stopped_ || (stopped_ = parse_stack_exhausted()))
			return 0;
		return DcmFileProducer::skip(len);
	}

      private:
	bool stopped_ = false;
};

// DcmInputFileStream with the producer above; values left in the file are
// read later through dcmtk's own file factory.
class GuardedFileStream : public DcmInputStream
{
      public:
	explicit GuardedFileStream(const char *path) : DcmInputStream(&producer_), producer_(path), path_(path)
	{
	}
	DcmInputStreamFactory *newFactory() const override
	{
		if (currentProducer() != &producer_)
			return nullptr; // behind a zlib filter
		return new DcmInputFileStreamFactory(OFFilename(path_.c_str()), tell());
	}

      private:
	GuardedFileProducer producer_;
	std::string path_;
};

} // namespace

// The File Meta Information alone, as loadFile(ERM_metaOnly): 0, -ENOENT,
// -EBADMSG, -ELOOP or -ENOMEM.
static int load_meta(DcmFileFormat &ff, const char *path)
{
	try {
		GuardedFileStream in(path);
		if (in.status().bad())
			return -ENOENT;
		if (ff.clear().bad())
			return -ENOMEM;
		ff.setReadMode(ERM_metaOnly);
		int rc = pn_dcm_read(ff, in, EXS_Unknown, k_max_read_length);
		ff.setReadMode(ERM_autoDetect);
		return rc;
	} catch (const std::bad_alloc &) {
		return -ENOMEM;
	}
}

static int load_dataset_file(DcmDataset &ds, const char *path, E_TransferSyntax xfer)
{
	try {
		GuardedFileStream in(path);
		if (in.status().bad())
			return -EBADMSG;
		return pn_dcm_read(ds, in, xfer, k_max_read_length);
	} catch (const std::bad_alloc &) {
		return -ENOMEM;
	}
}

// A handle for the Part-10 file read from `in`.
static int load_handle(DcmInputStream &in, pn_dcm_ds **ret_ds)
{
	pn_dcm_ds *d = nullptr;
	try {
		d = new pn_dcm_ds();
		d->ff = new DcmFileFormat();
		d->item = d->ff->getDataset();
		int rc = pn_dcm_read(*d->ff, in, EXS_Unknown, k_max_read_length);
		if (rc < 0) {
			delete d;
			return rc;
		}
		*ret_ds = d;
		return 0;
	} catch (...) {
		delete d;
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_ds_load(const char *path, pn_dcm_ds **ret_ds)
{
	try {
		GuardedFileStream in(path);
		if (in.status().bad())
			return -ENOENT;
		return load_handle(in, ret_ds);
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_ds_load_deflated(const char *path, size_t dataset_offset, uint64_t max_inflated,
                                       pn_dcm_ds **ret_ds)
{
	pn_dcm_ds *d = nullptr;
	int fd = -1;
	try {
		d = new pn_dcm_ds();
		d->ff = new DcmFileFormat();
		d->item = d->ff->getDataset();
		// The meta header as it is; the dataset from the scratch file.
		int rc = load_meta(*d->ff, path);
		if (rc == -ENOENT)
			rc = -EBADMSG;
		if (rc == 0 && (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			rc = -errno;
		if (rc == 0) {
			const char *slash = strrchr(path, '/');
			std::string dir = slash ? std::string(path, (size_t)(slash - path + (slash == path))) : ".";
			rc = pn_dcm_inflate_scratch(fd, (off_t)dataset_offset, dir, max_inflated, &d->scratch_fd);
		}
		if (rc == 0) {
			// dcmtk opens the values it skipped by name, later: this name
			// stays valid while the handle holds the descriptor.
			char name[64];
			snprintf(name, sizeof(name), "/proc/self/fd/%d", d->scratch_fd);
			rc = load_dataset_file(*d->ff->getDataset(), name, EXS_LittleEndianExplicit);
		}
		if (fd >= 0)
			close(fd);
		if (rc < 0) {
			delete d;
			return rc;
		}
		*ret_ds = d;
		return 0;
	} catch (...) {
		if (fd >= 0)
			close(fd);
		delete d;
		return -ENOMEM;
	}
}

namespace
{

// The bytes of a file still in memory, in pieces, read in place: a value
// longer than k_max_read_length is skipped and read from the pieces only
// if asked for, as dcmtk does with a file. The pieces must outlive the
// dataset.
class PartsProducer : public DcmProducer
{
      public:
	PartsProducer(const std::vector<pn_dcm_part> &parts, offile_off_t at) : parts_(parts)
	{
		for (const pn_dcm_part &p : parts_)
			total_ += (offile_off_t)p.len;
		pos_ = at < total_ ? at : total_;
	}
	OFBool good() const override
	{
		return !stopped_;
	}
	OFCondition status() const override
	{
		return stopped_ ? EC_InvalidStream : EC_Normal;
	}
	OFBool eos() override
	{
		return stopped_ || pos_ == total_;
	}
	offile_off_t avail() override
	{
		return stopped_ ? 0 : total_ - pos_;
	}
	offile_off_t read(void *buf, offile_off_t len) override
	{
		if (stopped_ || (stopped_ = parse_stack_exhausted()))
			return 0;
		unsigned char *to = static_cast<unsigned char *>(buf);
		offile_off_t done = 0, start = 0;
		for (const pn_dcm_part &p : parts_) {
			offile_off_t end = start + (offile_off_t)p.len;
			if (pos_ < end && done < len) {
				offile_off_t n = end - pos_ < len - done ? end - pos_ : len - done;
				memcpy(to + done, static_cast<const unsigned char *>(p.data) + (pos_ - start),
				       (size_t)n);
				pos_ += n;
				done += n;
			}
			start = end;
		}
		return done;
	}
	offile_off_t skip(offile_off_t len) override
	{
		offile_off_t n = len < total_ - pos_ ? len : total_ - pos_;
		pos_ += n;
		return n;
	}
	void putback(offile_off_t len) override
	{
		pos_ -= len < pos_ ? len : pos_;
	}
	offile_off_t pos() const
	{
		return pos_;
	}
	const std::vector<pn_dcm_part> &parts() const
	{
		return parts_;
	}

      private:
	std::vector<pn_dcm_part> parts_;
	offile_off_t total_ = 0, pos_ = 0;
	bool stopped_ = false; // nested too deeply (guard_internal.h)
};

class PartsStream : public DcmInputStream
{
      public:
	PartsStream(const std::vector<pn_dcm_part> &parts, offile_off_t at)
	    : DcmInputStream(&producer_), producer_(parts, at)
	{
	}
	DcmInputStreamFactory *newFactory() const override;

      private:
	PartsProducer producer_;
};

class PartsStreamFactory : public DcmInputStreamFactory
{
      public:
	PartsStreamFactory(const std::vector<pn_dcm_part> &parts, offile_off_t at) : parts_(parts), at_(at)
	{
	}
	DcmInputStream *create() const override
	{
		return new PartsStream(parts_, at_);
	}
	DcmInputStreamFactory *clone() const override
	{
		return new PartsStreamFactory(*this);
	}
	// dcmtk knows file factories only, and does not look at this
	DcmInputStreamFactoryType ident() const override
	{
		return DFT_DcmInputTempFileStreamFactory;
	}

      private:
	std::vector<pn_dcm_part> parts_;
	offile_off_t at_;
};

DcmInputStreamFactory *PartsStream::newFactory() const
{
	// Behind a zlib filter (deflated syntax) positions are not the
	// pieces': such values are read at once.
	if (currentProducer() != &producer_)
		return nullptr;
	return new PartsStreamFactory(producer_.parts(), producer_.pos());
}

} // namespace

extern "C" int pn_dcm_ds_load_parts(const pn_dcm_part *parts, size_t n, pn_dcm_ds **ret_ds)
{
	try {
		PartsStream in(std::vector<pn_dcm_part>(parts, parts + n), 0);
		return load_handle(in, ret_ds);
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_ds_nesting(const pn_dcm_ds *ds)
{
	try {
		return nesting_depth(ds->item);
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" void pn_dcm_ds_free(pn_dcm_ds *ds)
{
	delete ds;
}

void pn_dcm_text_values(DcmItem *item, std::vector<pn_dcm_text_value> &out)
{
	DcmObject *obj = nullptr;
	while ((obj = item->nextInContainer(obj)) != nullptr) {
		if (obj->ident() == EVR_SQ) {
			// Walked in list order: getItem(i) seeks from the first item
			// each time, and a million items took minutes.
			DcmObject *it = nullptr;
			while ((it = obj->nextInContainer(it)) != nullptr)
				pn_dcm_text_values(OFstatic_cast(DcmItem *, it), out);
			continue;
		}
		if (!is_text_vr(obj->ident()) || obj->getLength() == 0)
			continue;
		DcmElement *el = OFstatic_cast(DcmElement *, obj);
		char *raw = nullptr;
		Uint32 len = 0;
		if (el->getString(raw, len).good() && raw)
			out.push_back(pn_dcm_text_value{el, raw, len});
	}
}

extern "C" int pn_dcm_ds_convert_text(pn_dcm_ds *d, pn_dcm_text_fn decode, void *ctx, uint32_t *ret_bad_tag)
{
	try {
		// Text values are read from the file when asked for; pixel data
		// stays on disk.
		std::vector<pn_dcm_text_value> values;
		pn_dcm_text_values(d->item, values);
		int rc = 0;
		for (auto &v : values) {
			char *utf8 = nullptr;
			int r = decode(ctx, v.raw, v.len, &utf8);
			if (r == -ENOMEM)
				return r;
			if (r < 0 && rc == 0 && ret_bad_tag)
				*ret_bad_tag =
				    ((uint32_t)v.el->getTag().getGroup() << 16) | v.el->getTag().getElement();
			if (r < 0)
				rc = r;
			if (utf8) {
				v.el->putString(utf8);
				free(utf8);
			}
		}
		if (d->item->putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 192").bad())
			return -ENOMEM;
		return rc;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_ds_get(const pn_dcm_ds *d, uint32_t tag, char **ret_value)
{
	try {
		DcmTagKey key((Uint16)(tag >> 16), (Uint16)(tag & 0xffff));
		DcmItem *item = key.getGroup() == 0x0002 && d->ff ? (DcmItem *)d->ff->getMetaInfo() : d->item;
		DcmElement *el = nullptr;
		if (item->findAndGetElement(key, el, OFFalse).bad() || !el)
			return -ENOENT;
		OFString value;
		if (el->getLength() > 0 && !el->isLeaf())
			value.clear(); // sequences have no string value
		else if (el->getLength() > 0 && el->getOFStringArray(value).bad())
			value.clear();
		show_uid_nuls(el, value);
		char *s = strdup(value.c_str());
		if (!s)
			return -ENOMEM;
		*ret_value = s;
		return 0;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_ds_encode_levels(const pn_dcm_ds *d, int (*level_of)(uint32_t tag), size_t bulk_limit,
                                       pn_dcm_buf ret_levels[PN_LEVELS])
{
	DcmDataset levels[PN_LEVELS];
	for (int i = 0; i < PN_LEVELS; i++) {
		ret_levels[i].data = nullptr;
		ret_levels[i].len = 0;
	}
	try {
		DcmItem *ds = d->item;
		DcmObject *obj = nullptr;
		while ((obj = ds->nextInContainer(obj)) != nullptr) {
			const DcmTag &tag = obj->getTag();
			int level = level_of(((uint32_t)tag.getGroup() << 16) | tag.getElement());
			if (level != -2 && (level < 0 || level >= PN_LEVELS))
				continue;
			if (is_binary_vr(obj->ident()) && obj->getLength() > bulk_limit)
				continue;
			if (tag == DCM_PixelData || tag == DCM_FloatPixelData || tag == DCM_DoubleFloatPixelData)
				continue;
			obj->loadAllDataIntoMemory();
			for (int l = 0; l < PN_LEVELS; l++)
				if (level == -2 || level == l)
					levels[l].insert(OFstatic_cast(DcmElement *, obj->clone()));
		}
		for (int i = 0; i < PN_LEVELS; i++) {
			int rc = encode(levels[i], &ret_levels[i]);
			if (rc < 0) {
				for (int j = 0; j < PN_LEVELS; j++) {
					free(ret_levels[j].data);
					ret_levels[j].data = nullptr;
				}
				return rc;
			}
		}
		return 0;
	} catch (...) {
		for (int j = 0; j < PN_LEVELS; j++) {
			free(ret_levels[j].data);
			ret_levels[j].data = nullptr;
		}
		return -ENOMEM;
	}
}
