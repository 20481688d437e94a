#include "attr_levels.h"

#include <stdlib.h>

#include "dcm/pn_dcm.h"

typedef struct {
	uint32_t tag;
	int level;
} level_entry;

#define P PN_LEVEL_PATIENT
#define ST PN_LEVEL_STUDY
#define SE PN_LEVEL_SERIES

/* Sorted by tag (bsearch). */
static const level_entry table[] = {
    {PN_TAG(0x0008, 0x0005), PN_LEVEL_EVERY}, /* SpecificCharacterSet */
    {PN_TAG(0x0008, 0x0020), ST},             /* StudyDate */
    {PN_TAG(0x0008, 0x0021), SE},             /* SeriesDate */
    {PN_TAG(0x0008, 0x0030), ST},             /* StudyTime */
    {PN_TAG(0x0008, 0x0031), SE},             /* SeriesTime */
    {PN_TAG(0x0008, 0x0050), ST},             /* AccessionNumber */
    {PN_TAG(0x0008, 0x0051), ST},             /* IssuerOfAccessionNumberSequence */
    {PN_TAG(0x0008, 0x0060), SE},             /* Modality */
    {PN_TAG(0x0008, 0x0070), SE},             /* Manufacturer */
    {PN_TAG(0x0008, 0x0080), SE},             /* InstitutionName */
    {PN_TAG(0x0008, 0x0081), SE},             /* InstitutionAddress */
    {PN_TAG(0x0008, 0x0090), ST},             /* ReferringPhysicianName */
    {PN_TAG(0x0008, 0x0092), ST},             /* ReferringPhysicianAddress */
    {PN_TAG(0x0008, 0x0094), ST},             /* ReferringPhysicianTelephoneNumbers */
    {PN_TAG(0x0008, 0x0096), ST},             /* ReferringPhysicianIdentificationSequence */
    {PN_TAG(0x0008, 0x1010), SE},             /* StationName */
    {PN_TAG(0x0008, 0x1030), ST},             /* StudyDescription */
    {PN_TAG(0x0008, 0x1032), ST},             /* ProcedureCodeSequence */
    {PN_TAG(0x0008, 0x103E), SE},             /* SeriesDescription */
    {PN_TAG(0x0008, 0x103F), SE},             /* SeriesDescriptionCodeSequence */
    {PN_TAG(0x0008, 0x1040), SE},             /* InstitutionalDepartmentName */
    {PN_TAG(0x0008, 0x1048), ST},             /* PhysiciansOfRecord */
    {PN_TAG(0x0008, 0x1049), ST},             /* PhysiciansOfRecordIdentificationSequence */
    {PN_TAG(0x0008, 0x1050), SE},             /* PerformingPhysicianName */
    {PN_TAG(0x0008, 0x1052), SE},             /* PerformingPhysicianIdentificationSequence */
    {PN_TAG(0x0008, 0x1060), ST},             /* NameOfPhysiciansReadingStudy */
    {PN_TAG(0x0008, 0x1062), ST},             /* PhysiciansReadingStudyIdentificationSequence */
    {PN_TAG(0x0008, 0x1070), SE},             /* OperatorsName */
    {PN_TAG(0x0008, 0x1072), SE},             /* OperatorIdentificationSequence */
    {PN_TAG(0x0008, 0x1080), ST},             /* AdmittingDiagnosesDescription */
    {PN_TAG(0x0008, 0x1084), ST},             /* AdmittingDiagnosesCodeSequence */
    {PN_TAG(0x0008, 0x1090), SE},             /* ManufacturerModelName */
    {PN_TAG(0x0008, 0x1110), ST},             /* ReferencedStudySequence */
    {PN_TAG(0x0008, 0x1111), SE},             /* ReferencedPerformedProcedureStepSequence */
    {PN_TAG(0x0008, 0x1120), P},              /* ReferencedPatientSequence */
    {PN_TAG(0x0008, 0x1250), SE},             /* RelatedSeriesSequence */
    {PN_TAG(0x0010, 0x0010), P},              /* PatientName */
    {PN_TAG(0x0010, 0x0020), P},              /* PatientID */
    {PN_TAG(0x0010, 0x0021), P},              /* IssuerOfPatientID */
    {PN_TAG(0x0010, 0x0022), P},              /* TypeOfPatientID */
    {PN_TAG(0x0010, 0x0024), P},              /* IssuerOfPatientIDQualifiersSequence */
    {PN_TAG(0x0010, 0x0030), P},              /* PatientBirthDate */
    {PN_TAG(0x0010, 0x0032), P},              /* PatientBirthTime */
    {PN_TAG(0x0010, 0x0033), P},              /* PatientBirthDateInAlternativeCalendar */
    {PN_TAG(0x0010, 0x0034), P},              /* PatientDeathDateInAlternativeCalendar */
    {PN_TAG(0x0010, 0x0035), P},              /* PatientAlternativeCalendar */
    {PN_TAG(0x0010, 0x0040), P},              /* PatientSex */
    {PN_TAG(0x0010, 0x0050), P},              /* PatientInsurancePlanCodeSequence */
    {PN_TAG(0x0010, 0x1000), P},              /* OtherPatientIDs */
    {PN_TAG(0x0010, 0x1001), P},              /* OtherPatientNames */
    {PN_TAG(0x0010, 0x1002), P},              /* OtherPatientIDsSequence */
    {PN_TAG(0x0010, 0x1005), P},              /* PatientBirthName */
    {PN_TAG(0x0010, 0x1010), ST},             /* PatientAge */
    {PN_TAG(0x0010, 0x1020), ST},             /* PatientSize */
    {PN_TAG(0x0010, 0x1030), ST},             /* PatientWeight */
    {PN_TAG(0x0010, 0x1040), P},              /* PatientAddress */
    {PN_TAG(0x0010, 0x1060), P},              /* PatientMotherBirthName */
    {PN_TAG(0x0010, 0x1080), ST},             /* MilitaryRank */
    {PN_TAG(0x0010, 0x2000), ST},             /* MedicalAlerts */
    {PN_TAG(0x0010, 0x2110), ST},             /* Allergies */
    {PN_TAG(0x0010, 0x2154), P},              /* PatientTelephoneNumbers */
    {PN_TAG(0x0010, 0x2160), P},              /* EthnicGroup */
    {PN_TAG(0x0010, 0x2180), ST},             /* Occupation */
    {PN_TAG(0x0010, 0x21A0), ST},             /* SmokingStatus */
    {PN_TAG(0x0010, 0x21B0), ST},             /* AdditionalPatientHistory */
    {PN_TAG(0x0010, 0x21C0), ST},             /* PregnancyStatus */
    {PN_TAG(0x0010, 0x21D0), ST},             /* LastMenstrualDate */
    {PN_TAG(0x0010, 0x21F0), P},              /* PatientReligiousPreference */
    {PN_TAG(0x0010, 0x2201), P},              /* PatientSpeciesDescription */
    {PN_TAG(0x0010, 0x2202), P},              /* PatientSpeciesCodeSequence */
    {PN_TAG(0x0010, 0x2203), P},              /* PatientSexNeutered */
    {PN_TAG(0x0010, 0x2292), P},              /* PatientBreedDescription */
    {PN_TAG(0x0010, 0x2293), P},              /* PatientBreedCodeSequence */
    {PN_TAG(0x0010, 0x2294), P},              /* BreedRegistrationSequence */
    {PN_TAG(0x0010, 0x2295), P},              /* BreedRegistrationNumber */
    {PN_TAG(0x0010, 0x2297), P},              /* ResponsiblePerson */
    {PN_TAG(0x0010, 0x2298), P},              /* ResponsiblePersonRole */
    {PN_TAG(0x0010, 0x2299), P},              /* ResponsibleOrganization */
    {PN_TAG(0x0010, 0x4000), P},              /* PatientComments */
    {PN_TAG(0x0012, 0x0062), P},              /* PatientIdentityRemoved */
    {PN_TAG(0x0012, 0x0063), P},              /* DeidentificationMethod */
    {PN_TAG(0x0012, 0x0064), P},              /* DeidentificationMethodCodeSequence */
    {PN_TAG(0x0018, 0x0015), SE},             /* BodyPartExamined */
    {PN_TAG(0x0018, 0x1000), SE},             /* DeviceSerialNumber */
    {PN_TAG(0x0018, 0x1020), SE},             /* SoftwareVersions */
    {PN_TAG(0x0018, 0x1030), SE},             /* ProtocolName */
    {PN_TAG(0x0018, 0x5100), SE},             /* PatientPosition */
    {PN_TAG(0x0020, 0x000D), ST},             /* StudyInstanceUID */
    {PN_TAG(0x0020, 0x000E), SE},             /* SeriesInstanceUID */
    {PN_TAG(0x0020, 0x0010), ST},             /* StudyID */
    {PN_TAG(0x0020, 0x0011), SE},             /* SeriesNumber */
    {PN_TAG(0x0020, 0x0052), SE},             /* FrameOfReferenceUID */
    {PN_TAG(0x0020, 0x0060), SE},             /* Laterality */
    {PN_TAG(0x0020, 0x1040), SE},             /* PositionReferenceIndicator */
    {PN_TAG(0x0028, 0x0108), SE},             /* SmallestPixelValueInSeries */
    {PN_TAG(0x0028, 0x0109), SE},             /* LargestPixelValueInSeries */
    {PN_TAG(0x0032, 0x1032), ST},             /* RequestingPhysician */
    {PN_TAG(0x0032, 0x1033), ST},             /* RequestingService */
    {PN_TAG(0x0032, 0x1034), ST},             /* RequestingServiceCodeSequence */
    {PN_TAG(0x0032, 0x1060), ST},             /* RequestedProcedureDescription */
    {PN_TAG(0x0032, 0x1064), ST},             /* RequestedProcedureCodeSequence */
    {PN_TAG(0x0038, 0x0010), ST},             /* AdmissionID */
    {PN_TAG(0x0038, 0x0014), ST},             /* IssuerOfAdmissionIDSequence */
    {PN_TAG(0x0038, 0x0060), ST},             /* ServiceEpisodeID */
    {PN_TAG(0x0038, 0x0062), ST},             /* ServiceEpisodeDescription */
    {PN_TAG(0x0040, 0x0244), SE},             /* PerformedProcedureStepStartDate */
    {PN_TAG(0x0040, 0x0245), SE},             /* PerformedProcedureStepStartTime */
    {PN_TAG(0x0040, 0x0250), SE},             /* PerformedProcedureStepEndDate */
    {PN_TAG(0x0040, 0x0251), SE},             /* PerformedProcedureStepEndTime */
    {PN_TAG(0x0040, 0x0253), SE},             /* PerformedProcedureStepID */
    {PN_TAG(0x0040, 0x0254), SE},             /* PerformedProcedureStepDescription */
    {PN_TAG(0x0040, 0x0260), SE},             /* PerformedProtocolCodeSequence */
    {PN_TAG(0x0040, 0x0275), SE},             /* RequestAttributesSequence */
    {PN_TAG(0x0040, 0x0280), SE},             /* CommentsOnThePerformedProcedureStep */
    {PN_TAG(0x0088, 0x0200), PN_LEVEL_NONE},  /* IconImageSequence: bulk */
};

static int cmp(const void *key, const void *elem)
{
	uint32_t t = *(const uint32_t *)key;
	uint32_t e = ((const level_entry *)elem)->tag;
	return t < e ? -1 : t > e ? 1 : 0;
}

int pn_attr_level(uint32_t tag)
{
	/* group lengths, and the command/meta groups never reach a dataset */
	if ((tag & 0xffff) == 0 || (tag >> 16) <= 0x0002)
		return PN_LEVEL_NONE;
	/* overlay and curve data, waveform data: bulk */
	uint16_t g = (uint16_t)(tag >> 16), e = (uint16_t)tag;
	if ((g >= 0x6000 && g <= 0x601e && e == 0x3000) || tag == PN_TAG(0x5400, 0x0100) ||
	    tag == PN_TAG(0x0042, 0x0011) || g == 0x7fe0 || g == 0xfffc)
		return PN_LEVEL_NONE;
	const level_entry *hit = bsearch(&tag, table, sizeof(table) / sizeof(table[0]), sizeof(table[0]), cmp);
	return hit ? hit->level : PN_LEVEL_INSTANCE;
}
