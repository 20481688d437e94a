/* The only door to dcmtk. Everything behind it is C++; everything in front
 * of it is C and sees opaque handles, plain strings and negative errno-style
 * codes. No C++ exception crosses this header (each entry point catches).
 *
 * Nothing here logs above debug on its own: dcmtk's own messages are routed
 * to the callback given to pn_dcm_init(). */
#ifndef PN_DCM_H
#define PN_DCM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PN_AE_MAX 16
#ifndef PN_UID_MAX
#define PN_UID_MAX 64
#endif

/* Levels of the patient/study/series/instance hierarchy. */
enum { PN_LEVEL_PATIENT = 0, PN_LEVEL_STUDY, PN_LEVEL_SERIES, PN_LEVEL_INSTANCE, PN_LEVELS };

/* Log levels shared with scp/log.h. */
enum { PN_DCM_LOG_ERROR = 0, PN_DCM_LOG_WARNING, PN_DCM_LOG_INFO, PN_DCM_LOG_DEBUG };
typedef void (*pn_dcm_log_fn)(int level, const char *msg);

/* Once per process, before anything else. dcmtk's messages at or above
 * `level` go to `log`. Also turns off reverse DNS look-ups of peers. */
int pn_dcm_init(pn_dcm_log_fn log, int level);

/* ---- TLS ---------------------------------------------------------------- */

/* A TLS context for associations (PS3.15 B.12 as far as dcmtk 3.6.7
 * allows): TLS 1.2 and 1.3 only, TLS 1.3 preferred, on TLS 1.2 only ECDHE
 * with AES-GCM, no compression, no renegotiation, no session tickets,
 * OpenSSL security level 2; peer certificates verified against `ca` (and
 * `crl` for the leaf when given). */
typedef struct pn_dcm_tls pn_dcm_tls;

typedef struct {
	const char *certificate, *private_key; /* PEM; the key unencrypted */
	const char *ca;                        /* a PEM file or a hashed folder; NULL: none */
	const char *crl;                       /* PEM; NULL: none */
	bool require_client_certificate;       /* acceptor only */
} pn_dcm_tls_params;

/* acceptor: for incoming associations; else for outgoing ones (the server
 * must present a certificate that verifies). On failure (files unreadable,
 * an encrypted key, key and certificate not a pair) writes one line into
 * err. 0, -EINVAL, -ENOENT or -ENOMEM. */
int pn_dcm_tls_create(const pn_dcm_tls_params *params, bool acceptor, pn_dcm_tls **ret_tls, char *err, size_t errlen);
void pn_dcm_tls_free(pn_dcm_tls *tls); /* NULL is a no-op */

/* ---- associations ---------------------------------------------------- */

typedef struct pn_dcm_net pn_dcm_net;
typedef struct pn_dcm_assoc pn_dcm_assoc;

/* An acceptor network without a listening socket: the sockets come from the
 * listener process (see scp/server.c). `tls` (kept by the caller, may be
 * NULL): the context for connections received with tls set. */
int pn_dcm_net_create(int acse_timeout, const pn_dcm_tls *tls, pn_dcm_net **ret_net);
void pn_dcm_net_free(pn_dcm_net *net);

typedef struct {
	char calling_ae[PN_AE_MAX + 1]; /* trailing spaces removed */
	char called_ae[PN_AE_MAX + 1];
	char peer[64]; /* numeric address (set also when receiving fails) */
	unsigned long peer_max_pdu;
	/* TLS: what was negotiated, and the peer's certificate if it sent one */
	bool tls;
	char tls_protocol[16], tls_cipher[64];
	bool has_cert;
	unsigned char cert_sha256[32];
	char cert_subject[512]; /* RFC 2253, control characters replaced */
	/* -EACCES: why the TLS handshake failed (OpenSSL's reason, and the
	 * certificate check's when that failed) */
	char tls_error[768];
} pn_dcm_assoc_info;

/* Takes ownership of the connected socket `fd` (closed by
 * pn_dcm_assoc_free, or here on failure), runs the TLS handshake first when
 * `tls` (the net's context), and reads the A-ASSOCIATE-RQ.
 * Every read or write on the socket gives up after `acse_timeout` seconds
 * while negotiating and after `data_timeout` (0: never) once the association
 * is accepted, also in the middle of a PDU. Returns 0, -ETIMEDOUT,
 * -ECONNRESET (closed before a complete A-ASSOCIATE-RQ), -EACCES (the TLS
 * handshake failed: ret_info->peer and tls_error say who and why) or
 * -EPROTO. ret_info->peer is set in every case. */
int pn_dcm_assoc_receive(pn_dcm_net *net, int fd, bool tls, unsigned long max_pdu, int acse_timeout, int data_timeout,
                         pn_dcm_assoc **ret_assoc, pn_dcm_assoc_info *ret_info);

typedef enum {
	PN_REJECT_BUSY,        /* transient: local limit exceeded */
	PN_REJECT_CALLED_AE,   /* permanent: called AE title not recognised */
	PN_REJECT_CALLING_AE,  /* permanent: calling AE title not recognised */
	PN_REJECT_NO_CONTEXT,  /* permanent: nothing we could accept */
	PN_REJECT_APP_CONTEXT, /* permanent: not the DICOM application context */
} pn_dcm_reject_reason;

int pn_dcm_assoc_reject(pn_dcm_assoc *assoc, pn_dcm_reject_reason reason);

/* Accepts Verification, the Patient and Study Root C-FIND, C-MOVE and C-GET
 * models, and every storage SOP class dcmtk knows (with SCP/SCU role
 * selection, so that a C-GET SCU can receive on them), with the
 * transfer syntaxes we store as received; with `commitment` also Storage
 * Commitment Push Model with the requestor as SCU (it sends N-ACTION, we
 * send N-EVENT-REPORT); acknowledges the association.
 * *ret_accepted is the number of presentation contexts accepted (0: the
 * caller should reject with PN_REJECT_NO_CONTEXT instead; nothing was sent).
 * -EPROTONOSUPPORT: not the DICOM application context (reject with
 * PN_REJECT_APP_CONTEXT). */
int pn_dcm_assoc_accept(pn_dcm_assoc *assoc, bool commitment, unsigned *ret_accepted);

/* The extended negotiation fields accepted for this C-FIND, C-MOVE or
 * C-GET SOP class on the association (bit i: byte i of PS3.4 C.5.1.1.1 /
 * C.5.2.1.1 / C.5.3.1.1 answered 1). */
enum {
	PN_EXTNEG_RELATIONAL = 1 << 0,  /* relational queries / retrieval (C.4.1.2.2, C.4.2.2.2) */
	PN_EXTNEG_DATETIME = 1 << 1,    /* C-FIND: combined date-time matching */
	PN_EXTNEG_FUZZY_NAMES = 1 << 2, /* C-FIND: fuzzy semantic matching of person names */
	PN_EXTNEG_TZ_ADJUST = 1 << 3,   /* C-FIND: timezone query adjustment */
	PN_EXTNEG_EMPTY_VALUE = 1 << 5, /* C-FIND: empty value matching */
	PN_EXTNEG_MULTI_VALUE = 1 << 6, /* C-FIND: multiple value matching */
};
unsigned pn_dcm_assoc_extneg(const pn_dcm_assoc *assoc, const char *sop_class_uid);

typedef enum {
	PN_CMD_ECHO,
	PN_CMD_STORE,
	PN_CMD_FIND,
	PN_CMD_MOVE,
	PN_CMD_GET,
	PN_CMD_CANCEL, /* C-CANCEL-RQ outside of any running request */
	PN_CMD_ACTION, /* N-ACTION-RQ: the Requested SOP Class/Instance UIDs in sop_*_uid */
	PN_CMD_OTHER,
} pn_dcm_cmd_kind;

typedef struct {
	pn_dcm_cmd_kind kind;
	unsigned command_field; /* raw DIMSE command field, for logs */
	unsigned char pres_id;
	unsigned short message_id;
	bool has_dataset;
	char sop_class_uid[PN_UID_MAX + 1];    /* Affected SOP Class UID */
	char sop_instance_uid[PN_UID_MAX + 1]; /* Affected SOP Instance UID */
	char transfer_syntax[PN_UID_MAX + 1];  /* of the presentation context */
	char move_destination[PN_AE_MAX + 1];  /* C-MOVE: trailing spaces removed */
	unsigned short action_type_id;         /* N-ACTION */
	bool has_action_type_id;
} pn_dcm_cmd;

/* Results of pn_dcm_next_command() besides 0 (a command arrived). */
#define PN_DCM_RELEASED 1 /* peer requested release: answer pn_dcm_release_ack */
#define PN_DCM_ABORTED 2  /* peer aborted (A-ABORT or connection closed) */

/* Waits up to `timeout` seconds (0: forever) for the next DIMSE command.
 * Returns 0, PN_DCM_RELEASED, PN_DCM_ABORTED, -ETIMEDOUT, -EPROTO or -ELOOP
 * (a command set nested too deeply to read: abort). */
int pn_dcm_next_command(pn_dcm_assoc *assoc, int timeout, pn_dcm_cmd *ret_cmd);

/* Waits up to timeout_ms for the peer to send something (data dcmtk
 * already holds counts). 1: something to read, 0: nothing yet, or -errno. */
int pn_dcm_wait_readable(pn_dcm_assoc *assoc, int timeout_ms);

/* A-RELEASE-RP to the peer's A-RELEASE-RQ. */
int pn_dcm_release_ack(pn_dcm_assoc *assoc);

int pn_dcm_echo_respond(pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, unsigned short status);

/* Where a received dataset's bytes go. write() returns 0 or a negative
 * errno; after a failure the rest of the dataset is read and dropped. */
typedef struct {
	int (*write)(void *ctx, const void *buf, size_t len);
	void *ctx;
} pn_dcm_sink;

/* Writes a Part-10 meta header (SOP Class/Instance UID from the command, the
 * context's transfer syntax, the calling AE as Source AE Title) and then the
 * dataset exactly as it arrives on the wire.
 * Returns 0; the sink's error (the dataset was drained, the association is
 * still usable); or -ETIMEDOUT/-EPROTO (the association is not usable). */
int pn_dcm_store_receive(pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, int timeout, const pn_dcm_sink *sink);

/* The meta header pn_dcm_store_receive writes, for an instance that came
 * another way (the command's UIDs and transfer syntax; source_ae as Source
 * AE Title when it is at most 16 characters). 0 or the sink's error. */
int pn_dcm_write_meta(const pn_dcm_cmd *cmd, const char *source_ae, const pn_dcm_sink *sink);

/* Reads and drops the dataset that follows a command. */
int pn_dcm_discard_dataset(pn_dcm_assoc *assoc, int timeout);

/* C-STORE-RSP; `comment` (may be NULL) goes into Error Comment (0000,0902)
 * for failure statuses, cut to 64 characters. */
int pn_dcm_store_respond(pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, unsigned short status, const char *comment);

typedef struct pn_dcm_ds pn_dcm_ds;

/* C-FIND, C-MOVE, C-GET, N-ACTION: reads the identifier (Action
 * Information) that follows the command into memory.
 * Returns 0; -EBADMSG: sequences nested more than PN_DCM_MAX_NESTING levels
 * (read whole, the association goes on); -ETIMEDOUT, -EPROTO or -ELOOP
 * (nested too deeply to read): the association is not usable. */
int pn_dcm_find_receive(pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, int timeout, pn_dcm_ds **ret_identifier);

/* C-FIND-RSP: pending (0xFF00, 0xFF01) with `identifier`, or the final
 * response with NULL; `comment` as for pn_dcm_store_respond (failures). */
int pn_dcm_find_respond(pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, unsigned short status, const pn_dcm_ds *identifier,
                        const char *comment);
/* A pending C-FIND-RSP whose identifier the caller encoded in the context's
 * transfer syntax (implicit or explicit VR little endian), held with the
 * ones before it and written once 64 KiB are held (pn_dcm_assoc_flush).
 * 0; 1: not possible on this association (use pn_dcm_find_respond);
 * -EPROTO. */
int pn_dcm_find_respond_encoded(pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, unsigned short status,
                                const void *identifier, size_t len);

/* Whether the peer has sent C-CANCEL-RQ for `cmd`; never waits.
 * 1 yes, 0 no, -EPROTO (something else arrived or the link broke). */
int pn_dcm_cancel_requested(pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd);

/* ---- storage commitment (PS3.4 J.3) ------------------------------------ */

#define PN_DCM_COMMIT_CLASS "1.2.840.10008.1.20.1"
#define PN_DCM_COMMIT_INSTANCE "1.2.840.10008.1.20.1.1"

/* Whether `uid` is a storage SOP class we accept (dcmtk's list). */
bool pn_dcm_is_storage_class(const char *uid);

/* N-ACTION-RSP with the request's Action Type ID and Requested SOP
 * Class/Instance as Affected ones; `comment` into Error Comment for
 * failures. 0 or -EPROTO. */
int pn_dcm_action_respond(pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, unsigned short status, const char *comment);

/* One reference of a report: failure_reason 0 goes into Referenced SOP
 * Sequence, else into Failed SOP Sequence with Failure Reason. */
typedef struct {
	const char *sop_class_uid, *sop_instance_uid;
	unsigned short failure_reason;
} pn_dcm_commit_ref;

/* Sends the N-EVENT-REPORT-RQ of a storage commitment result (Event Type
 * 1 when nothing failed, else 2) on an accepted Storage Commitment
 * context of `assoc`, where we are the SCP (the requestor's association
 * with its default roles, or ours from pn_dcm_commit_open), and waits up
 * to `timeout` seconds for the answer. `retrieve_ae` (may be NULL) goes
 * into Retrieve AE Title (0008,0054). 0 with *ret_status the peer's;
 * PN_DCM_RELEASED (the peer asked for release instead: answer with
 * pn_dcm_release_ack), PN_DCM_ABORTED, -ENOTSUP (no such context),
 * -ETIMEDOUT, -EPROTO (something else arrived: the association is not
 * usable), -ENOMEM. */
int pn_dcm_commit_report(pn_dcm_assoc *assoc, const char *transaction_uid, const pn_dcm_commit_ref *refs, size_t n,
                         const char *retrieve_ae, int timeout, unsigned short *ret_status);

/* Opens an association to a storage commitment requestor for its report:
 * Storage Commitment Push Model proposed with role selection, we SCP and
 * not SCU (PS3.4 J.3.3), in explicit and implicit VR little endian.
 * Results as pn_dcm_scu_open; -ECONNREFUSED also when the peer did not
 * accept the context with that role. Closed with pn_dcm_scu_close. */
int pn_dcm_commit_open(const char *host, int port, const char *our_ae, const char *peer_ae, unsigned long max_pdu,
                       int acse_timeout, int dimse_timeout, const pn_dcm_tls *tls, char *tls_error,
                       size_t tls_error_len, pn_dcm_assoc **ret_assoc);

/* ---- retrieval: C-MOVE and C-GET ------------------------------------- */

typedef struct {
	unsigned remaining, completed, failed, warning;
} pn_dcm_subops;

/* C-MOVE-RSP or C-GET-RSP (after cmd's kind): pending 0xFF00 with all four
 * counts, or a final status with completed/failed/warning (and remaining
 * too when cancelled). `failed_uids` ("\\"-joined, NULL: none) goes into
 * Failed SOP Instance UID List (0008,0058) of a final response; `comment`
 * into Error Comment for failures. */
int pn_dcm_retrieve_respond(pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, unsigned short status, const pn_dcm_subops *ops,
                            const char *failed_uids, const char *comment);

/* What a sub-association must be able to carry: one instance's SOP class
 * and the transfer syntax it is stored in. Duplicates are fine. */
typedef struct {
	const char *sop_class_uid;
	const char *transfer_syntax_uid;
} pn_dcm_offer;

/* Opens an association to a C-MOVE destination: for each distinct SOP
 * class, presentation contexts for its stored transfer syntaxes and for
 * explicit and implicit VR little endian. `tls` (a requestor context, may
 * be NULL): over TLS, the server's certificate verified and checked to name
 * `host`. Returns 0, -ECONNREFUSED (cannot connect, or the association was
 * rejected), -EACCES (the TLS handshake failed; why in tls_error when
 * given), -ETIMEDOUT, -EPROTO. The result is freed by pn_dcm_scu_close
 * (A-RELEASE, or abort when broken). */
int pn_dcm_scu_open(const char *host, int port, const char *our_ae, const char *peer_ae, const pn_dcm_offer *offers,
                    size_t n_offers, unsigned long max_pdu, int acse_timeout, int dimse_timeout, const pn_dcm_tls *tls,
                    char *tls_error, size_t tls_error_len, pn_dcm_assoc **ret_assoc);
void pn_dcm_scu_close(pn_dcm_assoc *assoc);

/* A stored file's dataset as it lies on disk: `length` bytes at `offset`
 * of `fd` (after the File Meta Information), in syntax `ts_uid`. */
typedef struct {
	int fd;
	uint64_t offset, length;
	const char *ts_uid;
} pn_dcm_raw;

/* Sends one stored Part-10 file in a C-STORE-RQ on `assoc`: a
 * sub-association from pn_dcm_scu_open, or (C-GET) the requesting
 * association, on a storage context its SCU proposed with the SCP role.
 * When `raw` is given and a context for the class accepted its syntax, its
 * bytes are sent as they are, unparsed. Otherwise the file at `path` is
 * parsed and decompressed to an accepted uncompressed syntax (JPEG,
 * JPEG-LS, RLE decoders) or losslessly re-encoded. Nothing is kept in
 * memory beyond one PDV. `originator_ae`/`originator_msg_id`: Move
 * Originator (NULL/0: none).
 * Returns 0 with *ret_status the peer's C-STORE status; -ENOENT (no such
 * file), -EBADMSG (unreadable), -ENOTSUP (no accepted context or syntax for
 * it), -ETIMEDOUT or -EPROTO (the association is broken). For C-GET, a
 * C-CANCEL-RQ arriving meanwhile is remembered: see pn_dcm_cancel_requested. */
int pn_dcm_store_send(pn_dcm_assoc *assoc, const char *path, const pn_dcm_raw *raw, const char *sop_class_uid,
                      const char *sop_instance_uid, const char *stored_ts, const char *originator_ae,
                      unsigned short originator_msg_id, int timeout, unsigned short *ret_status);
/* pn_dcm_store_send in two halves, so that other work (a C-MOVE's pending
 * response on another association) can be done while the receiver works:
 * start sends the request (same arguments and errors), finish waits for its
 * answer. Between them nothing else may be sent on `assoc`. */
int pn_dcm_store_start(pn_dcm_assoc *assoc, const char *path, const pn_dcm_raw *raw, const char *sop_class_uid,
                       const char *sop_instance_uid, const char *stored_ts, const char *originator_ae,
                       unsigned short originator_msg_id);
int pn_dcm_store_finish(pn_dcm_assoc *assoc, int timeout, unsigned short *ret_status);

/* Writes the pending C-FIND responses pn_dcm_find_respond_encoded holds
 * (it writes them itself once 64 KiB are held; pn_dcm_find_respond and the
 * next command's read flush first). Returns 0 or -errno. */
int pn_dcm_assoc_flush(pn_dcm_assoc *assoc);

void pn_dcm_assoc_abort(pn_dcm_assoc *assoc);
/* Closes the connection (if still open) and frees. NULL is a no-op. */
void pn_dcm_assoc_free(pn_dcm_assoc *assoc);

/* ---- datasets ---------------------------------------------------------- */

/* Every reading of a dataset below (and of commands, identifiers and
 * responses from peers) is guarded: dcmtk reads sequences by
 * recursion, without limit, and 20,000 nested empty sequences (720 KB)
 * overflowed the stack. Nesting that would take more than half a MiB of
 * stack to read (1 MiB for what dcmtk reads from the network itself)
 * gives -ELOOP, and those who store or match a dataset refuse it
 * past PN_DCM_MAX_NESTING levels (pn_dcm_ds_nesting), so that nothing
 * deeper is kept. Structured reports, the deepest real data, nest a few
 * tens of levels. */
#define PN_DCM_MAX_NESTING 128

/* Whether a command set or identifier too deeply nested to read has been
 * refused in this process: dcmtk's own reading of those is stopped by an
 * exception, which loses what it had built (a few hundred KB). A pool
 * worker is replaced after such an association. */
bool pn_dcm_parse_memory_lost(void);

/* Loads a Part-10 file. Large values stay on disk until asked for.
 * 0, -ENOENT, -EBADMSG, -ELOOP or -ENOMEM. */
int pn_dcm_ds_load(const char *path, pn_dcm_ds **ret_ds);
/* The same for a file whose dataset, from byte dataset_offset, is deflated
 * (PS3.5 A.5). dcmtk reads every value of a deflated stream into memory,
 * so the dataset is inflated into an unnamed scratch file beside `path`
 * (gone when the dataset is freed) and read from there: memory does not
 * grow with what it inflates to. More than max_inflated bytes: -E2BIG.
 * 0, -EBADMSG, -ELOOP, -E2BIG, -ENOMEM or another -errno of the scratch file
 * (-ENOSPC, -EIO, -EFBIG past RLIMIT_FSIZE). */
int pn_dcm_ds_load_deflated(const char *path, size_t dataset_offset, uint64_t max_inflated, pn_dcm_ds **ret_ds);
/* The same from a Part-10 file's bytes in memory, in n pieces. Large values
 * are read from the pieces when asked for, so the pieces must stay as they
 * are until the dataset is freed. 0, -EBADMSG, -ELOOP or -ENOMEM. */
typedef struct {
	const void *data;
	size_t len;
} pn_dcm_part;
int pn_dcm_ds_load_parts(const pn_dcm_part *parts, size_t n, pn_dcm_ds **ret_ds);
/* How deeply sequences nest in `ds` (0: no sequence), counted without
 * recursion; -ENOMEM. */
int pn_dcm_ds_nesting(const pn_dcm_ds *ds);
void pn_dcm_ds_free(pn_dcm_ds *ds);

/* Decoder for one text value: `len` raw bytes in, UTF-8 out (malloc'ed).
 * Returns 0, -EILSEQ (output still set, with replacement characters) or
 * -ENOMEM. */
typedef int (*pn_dcm_text_fn)(void *ctx, const char *in, size_t len, char **ret_out);

/* Replaces, in memory, every SH, LO, ST, LT, UC, UT and PN value (also in
 * sequences) by its decoding through `decode`, and sets Specific Character
 * Set to "ISO_IR 192". The file is not touched. Returns 0, -EILSEQ if some
 * value had bytes that could not be decoded (the first such element's tag
 * in *ret_bad_tag, if given), or -ENOMEM. */
int pn_dcm_ds_convert_text(pn_dcm_ds *ds, pn_dcm_text_fn decode, void *ctx, uint32_t *ret_bad_tag);

/* The value of a top-level element as a string (all values joined with
 * '\\', like DICOM's own encoding, without padding), malloc'ed.
 * Tags of group 0002 are looked up in the meta header.
 * Returns 0, -ENOENT (absent) or -ENOMEM. An element present with no value
 * gives "". */
int pn_dcm_ds_get(const pn_dcm_ds *ds, uint32_t tag, char **ret_value);

typedef struct {
	void *data; /* malloc'ed */
	size_t len;
} pn_dcm_buf;

/* Splits the top-level attributes by level: level_of(tag) gives a
 * PN_LEVEL_*, -1 to leave the attribute out or -2 to put it in every level. Binary values longer than
 * `bulk_limit` bytes (pixel data and the like) are always left out. Each
 * level becomes one buffer in explicit VR little endian. */
int pn_dcm_ds_encode_levels(const pn_dcm_ds *ds, int (*level_of)(uint32_t tag), size_t bulk_limit,
                            pn_dcm_buf ret_levels[PN_LEVELS]);

/* An empty dataset (to build a response in). */
int pn_dcm_ds_create(pn_dcm_ds **ret_ds);

/* `ds` encoded in implicit or explicit VR little endian, as a C-FIND
 * response goes out (malloc'ed; for tests). 0, -EINVAL, -ENOMEM. */
int pn_dcm_ds_encode_le(const pn_dcm_ds *ds, bool explicit_vr, pn_dcm_buf *out);

/* A dataset encoded in explicit VR little endian without meta header, as
 * pn_dcm_ds_encode_levels() makes them (copied). 0, -EBADMSG, -ELOOP,
 * -ENOMEM. */
int pn_dcm_ds_load_buffer(const void *data, size_t len, pn_dcm_ds **ret_ds);

typedef struct {
	uint32_t tag;
	char vr[3];        /* the dictionary's VR when the dataset said UN */
	bool vr_from_dict; /* vr is the dictionary's (the tag is known) */
	const char *value; /* all values joined with '\'; "" when empty */
	bool is_sequence;
	size_t n_items;
} pn_dcm_elem;

/* Calls fn for each top-level element in order; stops at fn's first
 * non-zero return and returns it; -ENOMEM. `e` is valid during the call. */
int pn_dcm_ds_each(const pn_dcm_ds *ds, int (*fn)(void *ctx, const pn_dcm_elem *e), void *ctx);

/* The item of the sequence `seq_tag` after `prev` (a view this returned
 * earlier; NULL: the first item), as a view: free it with pn_dcm_ds_free
 * before `ds`. Walking a sequence so costs one step per item (reaching
 * item i by its index costs i). 0, -ENOENT (no more), -ENOMEM. */
int pn_dcm_ds_item_after(const pn_dcm_ds *ds, uint32_t seq_tag, const pn_dcm_ds *prev, pn_dcm_ds **ret_view);

/* Inserts or replaces an element with the dictionary's VR: `value` ("" for
 * an empty element; an empty sequence for SQ). 0, -EINVAL, -ENOMEM. */
int pn_dcm_ds_put(pn_dcm_ds *ds, uint32_t tag, const char *value);

/* Copies element `tag` from src into dst. A sequence keeps, in each item,
 * only the keys of the first item of the same sequence in `shape` (the
 * request), when there is one. 0, -ENOENT (not in src), -ENOMEM. */
int pn_dcm_ds_copy(pn_dcm_ds *dst, const pn_dcm_ds *src, uint32_t tag, const pn_dcm_ds *shape);

/* Re-encodes every non-ASCII text value (UTF-8 in) through `fn` and sets
 * Specific Character Set to `charset`; all or nothing: on fn's first error
 * nothing has changed and that error is returned. `fn` NULL: values stay
 * as they are, only the character set is set. Returns 1 if there was
 * non-ASCII text, 0 if there was none (nothing changed), or an error. */
int pn_dcm_ds_recode_text(pn_dcm_ds *ds, pn_dcm_text_fn fn, void *ctx, const char *charset);

/* The tag of a dictionary keyword ("PatientName"): 0, -ENOENT, -ENOMEM. */
int pn_dcm_tag_from_keyword(const char *keyword, uint32_t *ret_tag);

/* The dictionary's VR of a tag ("PN"; "UN" and -ENOENT when unknown). */
int pn_dcm_tag_vr(uint32_t tag, char ret_vr[3]);

/* The dataset in the DICOM JSON model (PS3.18 F.2), compact, one object
 * "{...}" (its text must be UTF-8; Specific Character Set is removed from
 * the dataset first). 0, -EINVAL, -ENOMEM. */
int pn_dcm_ds_write_json(pn_dcm_ds *ds, pn_dcm_buf *out);

/* The same in the Native DICOM Model (PS3.19 A.1), as application/dicom+xml,
 * one document. 0, -EINVAL, -ENOMEM. */
int pn_dcm_ds_write_xml(pn_dcm_ds *ds, pn_dcm_buf *out);

/* A transfer syntax's name ("JPEG Lossless, Non-hierarchical, First-Order
 * Prediction"), or NULL when dcmtk does not know it. */
const char *pn_dcm_ts_name(const char *ts_uid);

/* Whether `ts_uid` is a syntax a stored instance may be converted to
 * without loss (native, or a lossless compression). */
bool pn_dcm_ts_lossless_target(const char *ts_uid);

/* The stored file at `path` as a Part 10 file in transfer syntax `ts_uid`
 * (malloc'ed into out), converted without loss. 0, -ENOENT, -EBADMSG (not
 * readable), -ENOTSUP (no codec, or only a lossy way), -ENOMEM. */
int pn_dcm_file_transcode(const char *path, const char *ts_uid, pn_dcm_buf *out);

/* A rendered frame: 8-bit grey (channels 1) or interleaved RGB (3). */
typedef struct {
	unsigned char *pixels; /* malloc'ed */
	unsigned width, height;
	int channels;
} pn_dcm_image;

/* Frame `frame` (0-based) of the stored file at `path`, windowed with its
 * first VOI window (else its pixel range) and scaled to fit max_w x max_h
 * (0: as it is). 0, -ENOENT, -ENODATA (no pixel data), -EBADMSG, -ENOTSUP
 * (no decoder, e.g. JPEG 2000), -ENOMEM. */
int pn_dcm_render(const char *path, unsigned long frame, unsigned max_w, unsigned max_h, pn_dcm_image *out);

/* Frames frames[0..n) (0-based) of the stored file at `path`, uncompressed
 * (decompressed when stored compressed), each malloc'ed into out[i]. 0,
 * -ENOENT, -ENODATA (no pixel data), -ERANGE (no such frame), -EBADMSG,
 * -ENOTSUP (no decoder), -ENOMEM. */
int pn_dcm_frames(const char *path, const unsigned long *frames, size_t n, pn_dcm_buf *out);

/* Frame `frame` (0-based) of a file stored compressed, as its compressed
 * bytes (its fragments joined; PS3.5 A.4) with the transfer syntax they are
 * in. 0, -EAGAIN (stored native: serve it uncompressed), -ERANGE (no such
 * frame), -ENODATA, -ENOTSUP (fragments that cannot be told apart),
 * -EBADMSG, -ENOMEM. */
int pn_dcm_frame_encapsulated(const char *path, unsigned long frame, pn_dcm_buf *out, char ret_ts[PN_UID_MAX + 1]);

/* Removes the top-level element `tag`, if there is one. */
void pn_dcm_ds_remove(pn_dcm_ds *ds, uint32_t tag);

#ifdef __cplusplus
}
#endif

#endif
