// The npm dicomweb-client library (what OHIF uses) against a running
// pacsnode: each step prints one JSON line the Python test checks.
//   node dicomweb_client.js URL STUDY_UID PART10_FILE [USER PASSWORD]
// Steps: search for studies and series, retrieve a series' instances and
// an instance's metadata and first frame, store one instance with STOW-RS.
'use strict';
global.XMLHttpRequest = require('xhr2');
const fs = require('fs');
const { api } = require('dicomweb-client');

async function main() {
  const [url, study, file, user, password] = process.argv.slice(2);
  const headers = {};
  if (user) headers.Authorization = 'Basic ' + Buffer.from(user + ':' + password).toString('base64');
  const client = new api.DICOMwebClient({ url, headers });
  const out = (step, value) => console.log(JSON.stringify({ step, value }));

  const studies = await client.searchForStudies({ queryParams: { StudyInstanceUID: study } });
  out('studies', studies);
  const series = await client.searchForSeries({ studyInstanceUID: study });
  out('series', series);
  const se = series[0]['0020000E'].Value[0];
  const instances = await client.searchForInstances({ studyInstanceUID: study, seriesInstanceUID: se });
  out('instances', instances);
  const sop = instances[0]['00080018'].Value[0];
  const retrieved = await client.retrieveSeries({ studyInstanceUID: study, seriesInstanceUID: se });
  out('retrieved', retrieved.map((b) => Buffer.from(b).toString('base64')));
  const metadata = await client.retrieveInstanceMetadata({
    studyInstanceUID: study, seriesInstanceUID: se, sopInstanceUID: sop,
  });
  out('metadata', metadata);
  const frames = await client.retrieveInstanceFrames({
    studyInstanceUID: study, seriesInstanceUID: se, sopInstanceUID: sop, frameNumbers: [1],
  });
  out('frames', frames.map((b) => Buffer.from(b).toString('base64')));
  const stowed = await client.storeInstances({ datasets: [new Uint8Array(fs.readFileSync(file)).buffer] });
  out('stored', stowed === undefined ? null : stowed);
}

main().catch((e) => {
  console.log(JSON.stringify({ step: 'error', value: String(e && (e.message || e.status || e)) }));
  process.exit(1);
});
