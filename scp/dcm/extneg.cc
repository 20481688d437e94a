// SOP Class Extended Negotiation (PS3.7 D.3.3.5) for the Query/Retrieve
// models (PS3.4 C.5.1.1.1 for C-FIND, C.5.2.1.1 / C.5.3.1.1 for C-MOVE and
// C-GET): of their fields the node implements byte 0 (relational queries,
// relational retrieval) and, for C-FIND, bytes 1, 2, 3, 5 and 6 (combined
// date-time matching, fuzzy semantic matching of person names, timezone
// query adjustment, empty value and multiple value matching); it answers
// each field it was offered, 1 where it implements what was asked and 0
// elsewhere (C-FIND: enhanced multi-frame conversion; C-MOVE / C-GET:
// enhanced multi-frame conversion), so that the requestor keeps the standard
// behaviour for those. Only items of a class the
// association accepted a context for are answered.
#include "assoc_internal.h"
#include "pn_dcm.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/extneg.h>

#include <cstring>

namespace
{

// The models, with how many fields each defines (C-FIND: bytes 0-6;
// C-MOVE / C-GET: relational retrieval, enhanced multi-frame conversion).
// `implemented`: the bytes (PN_EXTNEG_*) the node answers 1 when asked.
struct model {
	const char *uid;
	unsigned short fields;
	unsigned implemented;
};
constexpr unsigned k_find = PN_EXTNEG_RELATIONAL | PN_EXTNEG_DATETIME | PN_EXTNEG_FUZZY_NAMES | PN_EXTNEG_TZ_ADJUST |
                            PN_EXTNEG_EMPTY_VALUE | PN_EXTNEG_MULTI_VALUE;
const model k_models[PN_DCM_QR_MODELS] = {
    {UID_FINDPatientRootQueryRetrieveInformationModel, 7, k_find},
    {UID_FINDStudyRootQueryRetrieveInformationModel, 7, k_find},
    {UID_MOVEPatientRootQueryRetrieveInformationModel, 2, PN_EXTNEG_RELATIONAL},
    {UID_MOVEStudyRootQueryRetrieveInformationModel, 2, PN_EXTNEG_RELATIONAL},
    {UID_GETPatientRootQueryRetrieveInformationModel, 2, PN_EXTNEG_RELATIONAL},
    {UID_GETStudyRootQueryRetrieveInformationModel, 2, PN_EXTNEG_RELATIONAL},
};

int model_index(const char *uid)
{
	for (int i = 0; i < PN_DCM_QR_MODELS; i++)
		if (strcmp(uid, k_models[i].uid) == 0)
			return i;
	return -1;
}

bool context_accepted(T_ASC_Parameters *params, const char *sop_class)
{
	int n = ASC_countAcceptedPresentationContexts(params);
	int count = ASC_countPresentationContexts(params);
	for (int i = 0; i < count && n > 0; i++) {
		T_ASC_PresentationContext pc;
		if (ASC_getPresentationContext(params, i, &pc).good() && pc.resultReason == ASC_P_ACCEPTANCE &&
		    strcmp(pc.abstractSyntax, sop_class) == 0)
			return true;
	}
	return false;
}

} // namespace

void pn_dcm_negotiate_extended(pn_dcm_assoc *a)
{
	T_ASC_Parameters *params = a->assoc->params;
	SOPClassExtendedNegotiationSubItemList *asked = nullptr;
	ASC_getRequestedExtNegList(params, &asked);
	if (!asked || asked->empty())
		return;
	auto *answer = new SOPClassExtendedNegotiationSubItemList;
	for (SOPClassExtendedNegotiationSubItem *item : *asked) {
		const char *uid = item->sopClassUID.c_str();
		int m = model_index(uid);
		if (m < 0 || item->serviceClassAppInfoLength == 0 || !item->serviceClassAppInfo ||
		    !context_accepted(params, uid))
			continue;
		unsigned short n = item->serviceClassAppInfoLength < k_models[m].fields
		                       ? item->serviceClassAppInfoLength
		                       : k_models[m].fields;
		auto *r = new SOPClassExtendedNegotiationSubItem;
		r->sopClassUID = item->sopClassUID;
		r->sopClassUIDLength = (unsigned short)r->sopClassUID.length();
		r->serviceClassAppInfo = new unsigned char[n]();
		r->serviceClassAppInfoLength = n;
		unsigned got = 0;
		for (unsigned short f = 0; f < n; f++)
			if (item->serviceClassAppInfo[f] == 1 && (k_models[m].implemented & (1u << f))) {
				r->serviceClassAppInfo[f] = 1;
				got |= 1u << f;
			}
		a->extneg[m] = got;
		answer->push_back(r);
	}
	if (answer->empty()) {
		delete answer;
		return;
	}
	// dcmtk frees the list with the association's parameters
	ASC_setAcceptedExtNegList(params, answer);
}

extern "C" unsigned pn_dcm_assoc_extneg(const pn_dcm_assoc *a, const char *sop_class_uid)
{
	if (!a || !sop_class_uid)
		return 0;
	int m = model_index(sop_class_uid);
	return m >= 0 ? a->extneg[m] : 0;
}
