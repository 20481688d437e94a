// Storage commitment with npm's dcmjs-dimse, an independent DIMSE
// implementation (tests/integration/test_commitment.py):
//
//   node commitment.js request HOST PORT CALLING CALLED JSON
//     sends one N-ACTION-RQ; JSON is {"transaction": UID or null,
//     "refs": [[class, instance], ...] or null, "actionType": 1,
//     "instance": the Requested SOP Instance UID, "linger": ms to keep the
//     association open for the report (0: release at once), "dropReport": true
//     to abort the association, unanswered, when a report comes on it}. Prints one
//     JSON line per event: {"event": "action", "status": N} and
//     {"event": "report", ...} for an N-EVENT-REPORT-RQ received on it.
//   node commitment.js listen PORT AET
//     an SCP for the reports that come on new associations: accepts the
//     Storage Commitment context when the caller asks to be its SCP (role
//     selection), prints {"event": "listening"} and then one "report" line
//     for each N-EVENT-REPORT-RQ, until killed.
'use strict';
const dcmjsDimse = require('dcmjs-dimse');
const { Client, Dataset, Server, Scp } = dcmjsDimse;
const { NActionRequest } = dcmjsDimse.requests;
const { NEventReportResponse } = dcmjsDimse.responses;
const { Status, PresentationContextResult, TransferSyntax, SopClass } = dcmjsDimse.constants;

const CLASS = SopClass.StorageCommitmentPushModel;
const INSTANCE = '1.2.840.10008.1.20.1.1';

// Every event with its time (ms since the epoch), for latencies.
function out(o) {
  process.stdout.write(JSON.stringify(Object.assign({ t: Date.now() }, o)) + '\n');
}

function report(request, via) {
  const ds = request.getDataset();
  const e = ds ? ds.getElements() : {};
  const refs = (seq) =>
    (seq || []).map((i) => ({
      cls: i.ReferencedSOPClassUID,
      uid: i.ReferencedSOPInstanceUID,
      reason: i.FailureReason,
    }));
  out({
    event: 'report',
    via,
    eventType: request.getEventTypeId(),
    sopClass: request.getAffectedSopClassUid(),
    sopInstance: request.getAffectedSopInstanceUid(),
    transaction: e.TransactionUID,
    retrieveAe: e.RetrieveAETitle,
    referenced: refs(e.ReferencedSOPSequence),
    failed: refs(e.FailedSOPSequence),
  });
  const response = NEventReportResponse.fromRequest(request);
  response.setStatus(Status.Success);
  return response;
}

function request(host, port, calling, called, spec) {
  const rq = new NActionRequest(CLASS, spec.instance || INSTANCE, spec.actionType === undefined ? 1 : spec.actionType);
  const elements = {};
  if (spec.transaction) elements.TransactionUID = spec.transaction;
  if (spec.refs)
    elements.ReferencedSOPSequence = spec.refs.map(([cls, uid]) => {
      const item = {};
      if (cls) item.ReferencedSOPClassUID = cls;
      if (uid) item.ReferencedSOPInstanceUID = uid;
      return item;
    });
  rq.setDataset(new Dataset(elements));
  const client = new Client();
  client.on('associationAccepted', () => out({ event: 'accepted' }));
  rq.on('response', (response) => {
    out({ event: 'action', status: response.getStatus() });
  });
  client.addRequest(rq);
  client.on('nEventReportRequest', (request, callback) => {
    if (!spec.dropReport) return callback(report(request, 'same'));
    out({ event: 'dropped' });
    client.abort();
  });
  client.on('associationRejected', (r) => out({ event: 'rejected', reason: r }));
  client.on('networkError', (e) => out({ event: 'error', message: String(e) }));
  client.on('closed', () => out({ event: 'closed' }));
  client.send(host, port, calling, called, { associationLingerTimeout: spec.linger || 0 });
}

class CommitScp extends Scp {
  associationRequested(association) {
    this.association = association;
    association.getPresentationContexts().forEach((c) => {
      const pc = association.getPresentationContext(c.id);
      // The caller must take the SCP role (PS3.4 J.3.3): role selection
      // with SCU role 0 and SCP role 1.
      const scp = pc.getProviderRole() === true && pc.getUserRole() !== true;
      const ts = pc
        .getTransferSyntaxUids()
        .find((t) => t === TransferSyntax.ExplicitVRLittleEndian || t === TransferSyntax.ImplicitVRLittleEndian);
      if (pc.getAbstractSyntaxUid() === CLASS && scp && ts) {
        pc.setResult(PresentationContextResult.Accept, ts);
      } else {
        out({ event: 'refused-context', abstract: pc.getAbstractSyntaxUid(), scp });
        pc.setResult(PresentationContextResult.RejectAbstractSyntaxNotSupported);
      }
    });
    out({ event: 'association', calling: association.getCallingAeTitle(), called: association.getCalledAeTitle() });
    this.sendAssociationAccept();
  }
  nEventReportRequest(request, callback) {
    callback(report(request, 'new'));
  }
  associationReleaseRequested() {
    this.sendAssociationReleaseResponse();
  }
}

function listen(port) {
  const server = new Server(CommitScp);
  server.on('networkError', (e) => out({ event: 'error', message: String(e) }));
  server.listen(port);
  out({ event: 'listening' });
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'request') request(args[0], Number(args[1]), args[2], args[3], JSON.parse(args[4]));
else if (mode === 'listen') listen(Number(args[0]));
else {
  process.stderr.write('usage: commitment.js request HOST PORT CALLING CALLED JSON | listen PORT AET\n');
  process.exit(2);
}
