// A frame of a stored instance as 8-bit pixels for a picture (WADO-RS
// rendered and thumbnail, the study pages): dcmtk's image toolkit decodes
// and applies the modality LUT, then the instance's first window (VOI), or
// its pixel range when it has none; scaled to fit a box, aspect kept.
#include "pn_dcm.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmimage/diregist.h> // colour images
#include <dcmtk/dcmimgle/dcmimage.h>

#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <sys/stat.h>

#include "guard_internal.h"
#include "util_internal.h"

extern "C" int pn_dcm_render(const char *path, unsigned long frame, unsigned max_w, unsigned max_h, pn_dcm_image *out)
{
	memset(out, 0, sizeof(*out));
	try {
		std::unique_ptr<DcmFileFormat> ff;
		int lrc = load_stored_file(path, ff);
		if (lrc < 0)
			return lrc;
		DcmDataset *ds = ff->getDataset();
		if (!ds->tagExists(DCM_PixelData) && !ds->tagExists(DCM_FloatPixelData) &&
		    !ds->tagExists(DCM_DoubleFloatPixelData))
			return -ENODATA;
		E_TransferSyntax xfer = ds->getOriginalXfer();
		std::unique_ptr<DicomImage> img(new DicomImage(
		    ds, xfer, CIF_UsePartialAccessToPixelData | CIF_DecompressCompletePixelData, frame, 1));
		if (img->getStatus() != EIS_Normal)
			return img->getStatus() == EIS_InvalidValue || img->getStatus() == EIS_MissingAttribute
			           ? -EBADMSG
			           : -ENOTSUP;
		if (img->isMonochrome()) {
			if (img->getWindowCount() > 0)
				img->setWindow(0);
			else
				img->setMinMaxWindow();
		}
		unsigned long w = img->getWidth(), h = img->getHeight();
		if (w == 0 || h == 0)
			return -EBADMSG;
		if (max_w && max_h && (w > max_w || h > max_h)) {
			double s = std::min((double)max_w / (double)w, (double)max_h / (double)h);
			unsigned long nw = std::max(1ul, (unsigned long)((double)w * s + 0.5));
			unsigned long nh = std::max(1ul, (unsigned long)((double)h * s + 0.5));
			DicomImage *scaled = img->createScaledImage(nw, nh, 1 /* interpolate */, 0);
			if (!scaled)
				return -ENOMEM;
			img.reset(scaled);
			w = nw;
			h = nh;
		}
		int channels = img->isMonochrome() ? 1 : 3;
		unsigned long size = img->getOutputDataSize(8);
		if (size != w * h * (unsigned long)channels)
			return -ENOTSUP;
		unsigned char *px = (unsigned char *)malloc(size);
		if (!px)
			return -ENOMEM;
		// colour: interleaved RGB (planar 0)
		if (!img->getOutputData(px, size, 8, 0, 0)) {
			free(px);
			return -ENOTSUP;
		}
		out->pixels = px;
		out->width = (unsigned)w;
		out->height = (unsigned)h;
		out->channels = channels;
		return 0;
	} catch (...) {
		free(out->pixels);
		memset(out, 0, sizeof(*out));
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_frames(const char *path, const unsigned long *frames, size_t n, pn_dcm_buf *out)
{
	for (size_t i = 0; i < n; i++)
		out[i] = pn_dcm_buf{nullptr, 0};
	try {
		std::unique_ptr<DcmFileFormat> ff;
		int lrc = load_stored_file(path, ff);
		if (lrc < 0)
			return lrc;
		DcmDataset *ds = ff->getDataset();
		DcmElement *px = nullptr;
		if (ds->findAndGetElement(DCM_PixelData, px).bad() || !px)
			return -ENODATA;
		Sint32 count = 1;
		if (ds->findAndGetSint32(DCM_NumberOfFrames, count).bad() || count < 1)
			count = 1;
		Uint32 size = 0;
		if (px->getUncompressedFrameSize(ds, size).bad() || size == 0)
			return -EBADMSG;
		for (size_t i = 0; i < n; i++)
			if (frames[i] >= (unsigned long)count)
				return -ERANGE;
		for (size_t i = 0; i < n; i++) {
			// An odd frame size is padded by dcmtk's buffer: ask for one more.
			Uint32 cap = size + (size & 1);
			out[i].data = malloc(cap);
			if (!out[i].data)
				throw std::bad_alloc();
			Uint32 start = 0;
			OFString model;
			if (px->getUncompressedFrame(ds, (Uint32)frames[i], start, out[i].data, cap, model, NULL).bad())
				throw std::runtime_error("frame");
			out[i].len = size;
		}
		return 0;
	} catch (const std::runtime_error &) {
		for (size_t i = 0; i < n; i++) {
			free(out[i].data);
			out[i] = pn_dcm_buf{nullptr, 0};
		}
		return -ENOTSUP;
	} catch (...) {
		for (size_t i = 0; i < n; i++) {
			free(out[i].data);
			out[i] = pn_dcm_buf{nullptr, 0};
		}
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_frame_encapsulated(const char *path, unsigned long frame, pn_dcm_buf *out,
                                         char ret_ts[PN_UID_MAX + 1])
{
	*out = pn_dcm_buf{nullptr, 0};
	try {
		std::unique_ptr<DcmFileFormat> ff;
		int lrc = load_stored_file(path, ff);
		if (lrc < 0)
			return lrc;
		DcmDataset *ds = ff->getDataset();
		E_TransferSyntax xfer = ds->getOriginalXfer();
		DcmXfer x(xfer);
		if (x.isNotEncapsulated())
			return -EAGAIN; // native: the caller serves it uncompressed
		DcmElement *el = nullptr;
		if (ds->findAndGetElement(DCM_PixelData, el).bad() || !el)
			return -ENODATA;
		DcmPixelSequence *seq = nullptr;
		if (OFstatic_cast(DcmPixelData *, el)->getEncapsulatedRepresentation(xfer, NULL, seq).bad() || !seq)
			return -EBADMSG;
		Sint32 frames = 1;
		if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1)
			frames = 1;
		if (frame >= (unsigned long)frames)
			return -ERANGE;
		unsigned long items = seq->card();
		if (items < 2)
			return -EBADMSG;
		// Which fragments make the frame: all of them for one frame, one
		// each when there are as many as frames, else the Basic Offset
		// Table's ranges (PS3.5 A.4).
		unsigned long first = 0, last = 0; // fragment items, inclusive
		if (frames == 1) {
			first = 1;
			last = items - 1;
		} else if (items - 1 == (unsigned long)frames) {
			first = last = frame + 1;
		} else {
			DcmPixelItem *bot = nullptr;
			Uint8 *offs = nullptr;
			if (seq->getItem(bot, 0).bad() || bot->getLength() != 4u * (Uint32)frames ||
			    bot->getUint8Array(offs).bad() || !offs)
				return -ENOTSUP;
			auto at = [&](unsigned long i) {
				return (Uint32)offs[4 * i] | ((Uint32)offs[4 * i + 1] << 8) |
				       ((Uint32)offs[4 * i + 2] << 16) | ((Uint32)offs[4 * i + 3] << 24);
			};
			Uint32 lo = at(frame), hi = frame + 1 < (unsigned long)frames ? at(frame + 1) : 0xFFFFFFFFu;
			Uint32 pos = 0;
			for (unsigned long k = 1; k < items; k++) {
				DcmPixelItem *it = nullptr;
				if (seq->getItem(it, k).bad())
					return -EBADMSG;
				if (pos >= lo && pos < hi) {
					if (!first)
						first = k;
					last = k;
				}
				pos += 8 + it->getLength();
			}
			if (!first)
				return -EBADMSG;
		}
		size_t total = 0;
		for (unsigned long k = first; k <= last; k++) {
			DcmPixelItem *it = nullptr;
			if (seq->getItem(it, k).bad())
				return -EBADMSG;
			total += it->getLength();
		}
		unsigned char *buf = (unsigned char *)malloc(total ? total : 1);
		if (!buf)
			return -ENOMEM;
		size_t n = 0;
		for (unsigned long k = first; k <= last; k++) {
			DcmPixelItem *it = nullptr;
			Uint8 *data = nullptr;
			if (seq->getItem(it, k).bad() ||
			    (it->getLength() && (it->getUint8Array(data).bad() || !data))) {
				free(buf);
				return -EBADMSG;
			}
			memcpy(buf + n, data, it->getLength());
			n += it->getLength();
		}
		out->data = buf;
		out->len = n;
		snprintf(ret_ts, PN_UID_MAX + 1, "%s", x.getXferID());
		return 0;
	} catch (...) {
		free(out->data);
		*out = pn_dcm_buf{nullptr, 0};
		return -ENOMEM;
	}
}
