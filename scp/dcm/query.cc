// C-FIND messages, and the dataset operations queries need: reading
// identifiers and stored attribute blobs, building responses.
#include "pn_dcm.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcdict.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcvrcs.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dimse.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "assoc_internal.h"
#include "dataset_internal.h"
#include "guard_internal.h"
#include "pdu_internal.h"
#include "util_internal.h"

namespace
{

DcmTagKey key_of(uint32_t tag)
{
	return DcmTagKey((Uint16)(tag >> 16), (Uint16)(tag & 0xffff));
}

uint32_t tag_of(const DcmTagKey &k)
{
	return ((uint32_t)k.getGroup() << 16) | k.getElement();
}

pn_dcm_ds *wrap_owned(DcmItem *item)
{
	pn_dcm_ds *d = new pn_dcm_ds();
	d->owned = item;
	d->item = item;
	return d;
}

} // namespace

extern "C" int pn_dcm_find_receive(pn_dcm_assoc *a, const pn_dcm_cmd *cmd, int timeout, pn_dcm_ds **ret_ds)
{
	ParseGuard guard;
	DcmDataset *ds = nullptr;
	try {
		T_ASC_PresentationContextID pres_id = 0;
		OFCondition c = DIMSE_receiveDataSetInMemory(a->assoc, timeout > 0 ? DIMSE_NONBLOCKING : DIMSE_BLOCKING,
		                                             timeout, &pres_id, &ds, NULL, NULL);
		if (guard.tripped()) {
			delete ds;
			return -ELOOP;
		}
		if (c.bad()) {
			delete ds;
			return condition_to_errno(c);
		}
		if (pres_id != cmd->pres_id || !ds) {
			delete ds;
			return -EPROTO;
		}
		if (nesting_depth(ds) > PN_DCM_MAX_NESTING) {
			delete ds;
			return -EBADMSG;
		}
		*ret_ds = wrap_owned(ds);
		return 0;
	} catch (...) {
		// dcmtk frees what it read only when it returns: a throw leaves
		// it behind, and the association is given up
		return guard.tripped() ? -ELOOP : -ENOMEM;
	}
}

namespace
{

// Bytes of pending responses held before they are written.
constexpr size_t PENDING_BATCH = 64 * 1024;

// A pending C-FIND-RSP with its identifier, encoded here and written in one
// go: through DIMSE_sendFindResponse each response cost a command dataset
// built and encoded anew and two writes, a large part of a long answer.
// The command is the same for every pending response of a request, so it
// is encoded once. 1: not for this path (dcmtk sends it).
// The command and the identifier's bytes, in one write.
int send_pending_bytes(pn_dcm_assoc *a, const pn_dcm_cmd *cmd, unsigned short status, const unsigned char *id,
                       size_t len)
{
	E_TransferSyntax xfer = DcmXfer(cmd->transfer_syntax).getXfer();
	unsigned long max = a->assoc->sendPDVLength & ~1UL;
	DcmTransportConnection *tls = write_conn(a);
	if (a->sock < 0 || (a->tls && !tls) || xfer == EXS_Unknown || xfer == EXS_DeflatedLittleEndianExplicit ||
	    DcmXfer(xfer).isEncapsulated() || max < 2)
		return 1;
	if (!a->pending_valid || a->pending_msg_id != cmd->message_id || a->pending_status != status ||
	    a->pending_pres_id != cmd->pres_id) {
		DcmDataset c;
		if (c.putAndInsertString(DCM_AffectedSOPClassUID, cmd->sop_class_uid).bad() ||
		    c.putAndInsertUint16(DCM_CommandField, 0x8020).bad() ||
		    c.putAndInsertUint16(DCM_MessageIDBeingRespondedTo, cmd->message_id).bad() ||
		    c.putAndInsertUint16(DCM_CommandDataSetType, 0x0000).bad() ||
		    c.putAndInsertUint16(DCM_Status, status).bad())
			return -ENOMEM;
		std::vector<unsigned char> bytes;
		if (pn_dcm_encode(c, EXS_LittleEndianImplicit, true, bytes) < 0)
			return -ENOMEM;
		a->pending_cmd.clear();
		pn_pdu_append(a->pending_cmd, bytes.data(), bytes.size(), cmd->pres_id, true, max);
		a->pending_valid = true;
		a->pending_msg_id = cmd->message_id;
		a->pending_status = status;
		a->pending_pres_id = cmd->pres_id;
	}
	// Held until a batch is full or pn_dcm_assoc_flush: one write for
	// tens of responses instead of one each (a long answer spent 40% of
	// the worker's time in the kernel, a send per response).
	std::vector<unsigned char> &out = a->pending_buf;
	out.insert(out.end(), a->pending_cmd.begin(), a->pending_cmd.end());
	pn_pdu_append(out, id, len, cmd->pres_id, false, max);
	if (out.size() < PENDING_BATCH)
		return 0;
	return pn_dcm_assoc_flush(a) < 0 ? -EPROTO : 0;
}

int send_pending(pn_dcm_assoc *a, const pn_dcm_cmd *cmd, unsigned short status, DcmDataset *id)
{
	E_TransferSyntax xfer = DcmXfer(cmd->transfer_syntax).getXfer();
	if (a->sock < 0 || !id || xfer == EXS_Unknown || xfer == EXS_DeflatedLittleEndianExplicit ||
	    DcmXfer(xfer).isEncapsulated())
		return 1;
	a->pending_ds.clear();
	if (pn_dcm_encode(*id, xfer, false, a->pending_ds) < 0) {
		a->pending_ds.clear();
		return 1; // let dcmtk try, and say why
	}
	int rc = send_pending_bytes(a, cmd, status, a->pending_ds.data(), a->pending_ds.size());
	a->pending_ds.clear();
	return rc;
}

} // namespace

extern "C" int pn_dcm_find_respond(pn_dcm_assoc *a, const pn_dcm_cmd *cmd, unsigned short status,
                                   const pn_dcm_ds *identifier, const char *comment)
{
	try {
		// what the adapter held goes before anything dcmtk sends
		if (pn_dcm_assoc_flush(a) < 0)
			return -EPROTO;
		if ((status == 0xFF00 || status == 0xFF01) && identifier) {
			int rc = send_pending(a, cmd, status, OFstatic_cast(DcmDataset *, identifier->item));
			if (rc <= 0)
				return rc < 0 ? -EPROTO : 0;
		}
		T_DIMSE_C_FindRSP rsp;
		memset(&rsp, 0, sizeof(rsp));
		rsp.DimseStatus = status;
		DcmDataset *detail = nullptr;
		if (comment && *comment && status != 0 && status != 0xFF00 && status != 0xFF01) {
			detail = new DcmDataset();
			char buf[65];
			snprintf(buf, sizeof(buf), "%s", comment);
			detail->putAndInsertString(DCM_ErrorComment, buf);
		}
		DcmDataset *id = identifier ? OFstatic_cast(DcmDataset *, identifier->item) : nullptr;
		OFCondition c = DIMSE_sendFindResponse(a->assoc, cmd->pres_id, &a->msg.msg.CFindRQ, &rsp, id, detail);
		delete detail;
		return c.good() ? 0 : -EPROTO;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_assoc_flush(pn_dcm_assoc *a)
{
	if (!a || a->pending_buf.empty())
		return 0;
	int rc = a->broken
	             ? -EPIPE
	             : pn_pdu_send_all(a->sock, write_conn(a), a->pending_buf.data(), a->pending_buf.size(), false);
	a->pending_buf.clear();
	if (rc < 0)
		a->broken = true;
	return rc < 0 ? rc : 0;
}

extern "C" int pn_dcm_find_respond_encoded(pn_dcm_assoc *a, const pn_dcm_cmd *cmd, unsigned short status,
                                           const void *identifier, size_t len)
{
	if (status != 0xFF00 && status != 0xFF01)
		return -EINVAL;
	try {
		int rc = send_pending_bytes(a, cmd, status, OFstatic_cast(const unsigned char *, identifier), len);
		return rc < 0 ? -EPROTO : rc;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_ds_encode_le(const pn_dcm_ds *d, bool explicit_vr, pn_dcm_buf *out)
{
	out->data = nullptr;
	out->len = 0;
	try {
		std::vector<unsigned char> bytes;
		int rc = pn_dcm_encode(*d->item, explicit_vr ? EXS_LittleEndianExplicit : EXS_LittleEndianImplicit,
		                       false, bytes);
		if (rc < 0)
			return rc;
		out->data = malloc(bytes.empty() ? 1 : bytes.size());
		if (!out->data)
			return -ENOMEM;
		if (!bytes.empty())
			memcpy(out->data, bytes.data(), bytes.size());
		out->len = bytes.size();
		return 0;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_cancel_requested(pn_dcm_assoc *a, const pn_dcm_cmd *cmd)
{
	try {
		// Read while pn_dcm_store_send waited for a C-STORE-RSP (C-GET).
		if (a->cancel_seen && a->cancel_msg_id == cmd->message_id)
			return 1;
		// Polls without waiting; a well-behaved SCU sends nothing but
		// C-CANCEL-RQ while its request is being answered.
		OFCondition c = DIMSE_checkForCancelRQ(a->assoc, cmd->pres_id, cmd->message_id);
		if (c.good())
			return 1;
		if (c == DIMSE_NODATAAVAILABLE)
			return 0;
		return -EPROTO;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_ds_create(pn_dcm_ds **ret_ds)
{
	try {
		*ret_ds = wrap_owned(new DcmDataset());
		return 0;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_ds_load_buffer(const void *data, size_t len, pn_dcm_ds **ret_ds)
{
	pn_dcm_ds *d = nullptr;
	try {
		DcmDataset *ds = new DcmDataset();
		d = wrap_owned(ds);
		if (len > 0) {
			DcmInputBufferStream in;
			in.setBuffer(data, (offile_off_t)len);
			in.setEos();
			// a buffer stream gives no value later: everything is read now
			int rc = pn_dcm_read(*ds, in, EXS_LittleEndianExplicit, DCM_MaxReadLength);
			if (rc < 0) {
				delete d;
				return rc;
			}
		}
		*ret_ds = d;
		return 0;
	} catch (...) {
		delete d;
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_ds_each(const pn_dcm_ds *d, int (*fn)(void *ctx, const pn_dcm_elem *e), void *ctx)
{
	try {
		DcmObject *obj = nullptr;
		while ((obj = d->item->nextInContainer(obj)) != nullptr) {
			pn_dcm_elem e;
			memset(&e, 0, sizeof(e));
			e.tag = tag_of(obj->getTag());
			// The standard's VR, whatever the SCU wrote (implicit VR, UN or
			// a wrong explicit VR): matching rules follow the dictionary.
			DcmEVR vr = obj->ident();
			DcmTag t(obj->getTag());
			DcmEVR dict = t.getEVR();
			if (dict != EVR_UNKNOWN && dict != EVR_UN && dict != EVR_UNKNOWN2B) {
				vr = dict;
				e.vr_from_dict = true;
			}
			const char *name = DcmVR(vr).getValidVRName();
			snprintf(e.vr, sizeof(e.vr), "%s", name ? name : "UN");
			OFString value;
			if (obj->ident() == EVR_SQ) {
				DcmSequenceOfItems *sq = OFstatic_cast(DcmSequenceOfItems *, obj);
				e.is_sequence = true;
				e.n_items = sq->card();
			} else if (obj->getLength() > 0) {
				if (OFstatic_cast(DcmElement *, obj)->getOFStringArray(value).bad())
					value.clear();
				show_uid_nuls(OFstatic_cast(DcmElement *, obj), value);
			}
			e.value = value.c_str();
			int rc = fn(ctx, &e);
			if (rc != 0)
				return rc;
		}
		return 0;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_ds_item_after(const pn_dcm_ds *d, uint32_t seq_tag, const pn_dcm_ds *prev, pn_dcm_ds **ret_view)
{
	try {
		DcmSequenceOfItems *sq = nullptr;
		if (d->item->findAndGetSequence(key_of(seq_tag), sq, OFFalse).bad() || !sq)
			return -ENOENT;
		// in list order: the list remembers where the last step ended
		DcmObject *next = sq->nextInContainer(prev ? prev->item : nullptr);
		if (!next)
			return -ENOENT;
		pn_dcm_ds *v = new pn_dcm_ds();
		v->item = OFstatic_cast(DcmItem *, next);
		*ret_view = v;
		return 0;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_ds_put(pn_dcm_ds *d, uint32_t tag, const char *value)
{
	try {
		DcmTag t(key_of(tag));
		if (t.getEVR() == EVR_SQ) {
			DcmSequenceOfItems *sq = new DcmSequenceOfItems(t);
			return d->item->insert(sq, OFTrue).good() ? 0 : -EINVAL;
		}
		DcmEVR evr = t.getEVR();
		if (evr == EVR_UNKNOWN || evr == EVR_UN) {
			// Private or unknown: nothing we could return typed.
			t.setVR(DcmVR(EVR_UN));
		} else if (evr == EVR_xs) {
			t.setVR(DcmVR(EVR_US)); // "US or SS": either is only a key here
		} else if (evr == EVR_ox || evr == EVR_px || evr == EVR_lt) {
			t.setVR(DcmVR(EVR_OW)); // "OB or OW", "US, SS or OW" (LUT Data)
		}
		if (!value || !*value) {
			// An empty key (a return key): putAndInsertString takes no
			// binary VR (UN, OB, OW...), an element of the tag's VR does.
			DcmElement *el = nullptr;
			if (DcmItem::newDicomElementWithVR(el, t).bad() || !el)
				return -EINVAL;
			OFCondition c = d->item->insert(el, OFTrue);
			if (c.bad())
				delete el;
			return c.good() ? 0 : -EINVAL;
		}
		OFCondition c = d->item->putAndInsertString(t, value, OFTrue);
		return c.good() ? 0 : -EINVAL;
	} catch (...) {
		return -ENOMEM;
	}
}

namespace
{

// Copies the items of `src` into a new sequence, keeping in each only the
// keys present in the request's first item `shape` (all when it is empty).
DcmSequenceOfItems *copy_sequence(const DcmSequenceOfItems *src, DcmItem *shape)
{
	DcmSequenceOfItems *out = new DcmSequenceOfItems(src->getTag());
	// In list order: getItem(i) would walk from the first item each time.
	DcmSequenceOfItems *list = const_cast<DcmSequenceOfItems *>(src);
	for (DcmObject *o = list->nextInContainer(nullptr); o; o = list->nextInContainer(o)) {
		DcmItem *from = OFstatic_cast(DcmItem *, o);
		DcmItem *to;
		if (!shape || shape->card() == 0) {
			to = OFstatic_cast(DcmItem *, from->clone());
		} else {
			to = new DcmItem();
			DcmObject *k = nullptr;
			while ((k = shape->nextInContainer(k)) != nullptr) {
				DcmElement *el = nullptr;
				if (from->findAndGetElement(k->getTag(), el, OFFalse).good() && el) {
					if (el->ident() == EVR_SQ) {
						DcmSequenceOfItems *ksq = OFstatic_cast(DcmSequenceOfItems *, k);
						DcmItem *kshape =
						    k->ident() == EVR_SQ && ksq->card() > 0 ? ksq->getItem(0) : nullptr;
						to->insert(
						    copy_sequence(OFstatic_cast(DcmSequenceOfItems *, el), kshape),
						    OFTrue);
					} else {
						to->insert(OFstatic_cast(DcmElement *, el->clone()), OFTrue);
					}
				} else {
					to->insertEmptyElement(k->getTag(), OFTrue);
				}
			}
		}
		out->append(to);
	}
	return out;
}

} // namespace

extern "C" int pn_dcm_ds_copy(pn_dcm_ds *dst, const pn_dcm_ds *src, uint32_t tag, const pn_dcm_ds *shape)
{
	try {
		DcmElement *el = nullptr;
		if (!src || src->item->findAndGetElement(key_of(tag), el, OFFalse).bad() || !el)
			return -ENOENT;
		if (el->ident() == EVR_SQ) {
			DcmItem *kshape = nullptr;
			DcmSequenceOfItems *req = nullptr;
			if (shape && shape->item->findAndGetSequence(key_of(tag), req, OFFalse).good() && req &&
			    req->card() > 0)
				kshape = req->getItem(0);
			return dst->item->insert(copy_sequence(OFstatic_cast(DcmSequenceOfItems *, el), kshape), OFTrue)
			               .good()
			           ? 0
			           : -EINVAL;
		}
		return dst->item->insert(OFstatic_cast(DcmElement *, el->clone()), OFTrue).good() ? 0 : -EINVAL;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_ds_recode_text(pn_dcm_ds *d, pn_dcm_text_fn fn, void *ctx, const char *charset)
{
	std::vector<char *> done;
	try {
		std::vector<pn_dcm_text_value> values, non_ascii;
		pn_dcm_text_values(d->item, values);
		for (auto &v : values)
			for (Uint32 i = 0; i < v.len; i++)
				if ((unsigned char)v.raw[i] >= 0x80) {
					non_ascii.push_back(v);
					break;
				}
		int rc = 0;
		// All converted first, then applied: nothing changes on a failure.
		for (size_t i = 0; fn && i < non_ascii.size() && rc == 0; i++) {
			char *conv = nullptr;
			rc = fn(ctx, non_ascii[i].raw, non_ascii[i].len, &conv);
			if (rc < 0)
				free(conv);
			else
				done.push_back(conv);
		}
		if (rc == 0 && !non_ascii.empty()) {
			for (size_t i = 0; i < done.size(); i++)
				if (non_ascii[i].el->putString(done[i]).bad())
					rc = -EINVAL;
			if (rc == 0 && charset &&
			    d->item->putAndInsertString(DCM_SpecificCharacterSet, charset, OFTrue).bad())
				rc = -ENOMEM;
		}
		for (char *c : done)
			free(c);
		return rc < 0 ? rc : (non_ascii.empty() ? 0 : 1);
	} catch (...) {
		for (char *c : done)
			free(c);
		return -ENOMEM;
	}
}
