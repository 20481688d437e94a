// SOP Class Extended Negotiation (PS3.7 D.3.3.5) for the C-FIND models
// (PS3.4 C.5.1.1.1, Table C.5-1/-2): of its fields the node implements
// relational queries (byte 0); it answers each field it was offered, 1
// where it implements what was asked and 0 elsewhere (combined date-time
// matching, fuzzy semantic matching, timezone adjustment, enhanced
// multi-frame conversion, empty and multiple value matching), so that the
// requestor falls back on the standard behaviour for those. Only items of
// a class the association accepted a context for are answered; C-MOVE and
// C-GET items (relational retrieval) are not answered: not negotiated.
#include "assoc_internal.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/extneg.h>

#include <cstring>

namespace
{

constexpr unsigned short k_find_fields = 7; // Table C.5-1: bytes 0..6

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
		bool patient = strcmp(uid, UID_FINDPatientRootQueryRetrieveInformationModel) == 0;
		bool study = strcmp(uid, UID_FINDStudyRootQueryRetrieveInformationModel) == 0;
		if ((!patient && !study) || item->serviceClassAppInfoLength == 0 || !item->serviceClassAppInfo ||
		    !context_accepted(params, uid))
			continue;
		unsigned short n =
		    item->serviceClassAppInfoLength < k_find_fields ? item->serviceClassAppInfoLength : k_find_fields;
		auto *r = new SOPClassExtendedNegotiationSubItem;
		r->sopClassUID = item->sopClassUID;
		r->sopClassUIDLength = (unsigned short)r->sopClassUID.length();
		r->serviceClassAppInfo = new unsigned char[n]();
		r->serviceClassAppInfoLength = n;
		bool relational = item->serviceClassAppInfo[0] == 1;
		r->serviceClassAppInfo[0] = relational ? 1 : 0;
		(patient ? a->relational_patient : a->relational_study) = relational;
		answer->push_back(r);
	}
	if (answer->empty()) {
		delete answer;
		return;
	}
	// dcmtk frees the list with the association's parameters
	ASC_setAcceptedExtNegList(params, answer);
}

extern "C" bool pn_dcm_assoc_relational(const pn_dcm_assoc *a, const char *sop_class_uid)
{
	if (!a || !sop_class_uid)
		return false;
	if (strcmp(sop_class_uid, UID_FINDPatientRootQueryRetrieveInformationModel) == 0)
		return a->relational_patient;
	if (strcmp(sop_class_uid, UID_FINDStudyRootQueryRetrieveInformationModel) == 0)
		return a->relational_study;
	return false;
}
