// The DICOM models (PS3.18 F.2 JSON, PS3.19 XML) of a dataset, and keyword
// lookups, for DICOMweb: dcmtk writes the text (DcmItem::writeJson and
// writeXML), we only choose the form and where it goes. QIDO-RS's JSON is
// written without dcmtk where it can be (scp/json_model.c).
#include "pn_dcm.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcdict.h>
#include <dcmtk/dcmdata/dcdicent.h>
#include <dcmtk/dcmdata/dcjson.h>
#include <dcmtk/dcmdata/dctag.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <string>

#include "dataset_internal.h"

namespace
{

// Every keyword of the dictionary with the tag dcmtk's findEntry(name)
// gives: the first public entry in its iteration order, else the first
// repeating one, else the first private one. findEntry compares the name
// with every entry in turn: 0.2 ms a QIDO-RS parameter, half of a
// one-match request.
std::map<std::string, uint32_t> build_keywords()
{
	std::map<std::string, std::pair<int, uint32_t>> best; // rank: 0 public, 1 repeating, 2 private
	auto offer = [&best](const DcmDictEntry *e, int rank) {
		const char *name = e->getTagName();
		if (!name || !name[0])
			return;
		uint32_t tag = ((uint32_t)e->getGroup() << 16) | e->getElement();
		auto it = best.find(name);
		if (it == best.end())
			best.emplace(name, std::make_pair(rank, tag));
		else if (rank < it->second.first)
			it->second = std::make_pair(rank, tag);
	};
	DcmDataDictionary &dict = const_cast<DcmDataDictionary &>(dcmDataDict.rdlock());
	for (DcmHashDictIterator it = dict.normalBegin(); it != dict.normalEnd(); ++it)
		offer(*it, (*it)->getGroup() % 2 ? 2 : 0);
	for (DcmDictEntryListIterator it = dict.repeatingBegin(); it != dict.repeatingEnd(); ++it)
		offer(*it, 1);
	dcmDataDict.rdunlock();
	std::map<std::string, uint32_t> out;
	for (const auto &b : best)
		out.emplace(b.first, b.second.second);
	return out;
}

} // namespace

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
		static const std::map<std::string, uint32_t> keywords = build_keywords();
		auto it = keywords.find(keyword);
		if (it == keywords.end())
			return -ENOENT;
		*ret_tag = it->second;
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
