// The DICOM JSON model (PS3.18 F.2) of a dataset, and keyword lookups, for
// DICOMweb: dcmtk writes the JSON (DcmItem::writeJson), we only choose the
// form and where it goes.
#include "pn_dcm.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcdict.h>
#include <dcmtk/dcmdata/dcjson.h>
#include <dcmtk/dcmdata/dctag.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "dataset_internal.h"

extern "C" int pn_dcm_tag_from_keyword(const char *keyword, uint32_t *ret_tag)
{
	// Only a keyword: dcmtk's lookup also takes "gggg,eeee", which callers
	// parse themselves, and nothing else may reach the dictionary.
	size_t n = strlen(keyword);
	if (n == 0 || n > 64)
		return -ENOENT;
	for (size_t i = 0; i < n; i++) {
		char c = keyword[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
			return -ENOENT;
	}
	try {
		DcmTag tag;
		if (DcmTag::findTagFromName(keyword, tag).bad())
			return -ENOENT;
		*ret_tag = ((uint32_t)tag.getGroup() << 16) | tag.getElement();
		return 0;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_tag_vr(uint32_t tag, char ret_vr[3])
{
	try {
		DcmTag t(DcmTagKey((Uint16)(tag >> 16), (Uint16)(tag & 0xffff)));
		const char *vr = t.getVR().getValidVRName();
		if (t.getEVR() == EVR_UNKNOWN || !vr || strlen(vr) != 2) {
			memcpy(ret_vr, "UN", 3);
			return -ENOENT;
		}
		memcpy(ret_vr, vr, 3);
		return 0;
	} catch (...) {
		return -ENOMEM;
	}
}

namespace
{

// The dataset's text in the DICOMweb models, into a malloc'ed buffer. Both
// are UTF-8 by definition (PS3.18 F.2, PS3.19 A.1): the character set
// element would only mislead.
int write_model(pn_dcm_ds *d, bool xml, pn_dcm_buf *out)
{
	out->data = nullptr;
	out->len = 0;
	try {
		delete d->item->remove(DCM_SpecificCharacterSet);
		std::ostringstream os;
		std::string s;
		if (xml) {
			// dcmtk writes the root element, not the declaration
			os << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
			if (d->item->writeXML(os, DCMTypes::XF_useNativeModel).bad())
				return -EINVAL;
			s = os.str();
		} else {
			DcmJsonFormatCompact fmt(OFFalse);
			if (d->item->writeJson(os, fmt).bad())
				return -EINVAL;
			s = os.str();
			// A DcmDataset writes its braces, a DcmItem only its elements.
			if (s.empty() || s[0] != '{')
				s = "{" + s + "}";
		}
		out->data = malloc(s.size() + 1);
		if (!out->data)
			return -ENOMEM;
		memcpy(out->data, s.data(), s.size() + 1);
		out->len = s.size();
		return 0;
	} catch (...) {
		free(out->data);
		out->data = nullptr;
		return -ENOMEM;
	}
}

} // namespace

extern "C" int pn_dcm_ds_write_json(pn_dcm_ds *d, pn_dcm_buf *out)
{
	return write_model(d, false, out);
}

extern "C" void pn_dcm_ds_remove(pn_dcm_ds *d, uint32_t tag)
{
	try {
		delete d->item->remove(DcmTagKey((Uint16)(tag >> 16), (Uint16)(tag & 0xffff)));
	} catch (...) {
	}
}

extern "C" int pn_dcm_ds_write_xml(pn_dcm_ds *d, pn_dcm_buf *out)
{
	return write_model(d, true, out);
}
