/* The pages' style sheet and script, built into the node: a hospital
 * network reaches nothing else, and nothing else needs to be installed. */
#include <string.h>

#include "web_internal.h"

static const char css[] =
    ":root{--fg:#1d2430;--mute:#5c6675;--line:#d9dee6;--bg:#f6f7f9;--acc:#1f5fae}"
    "*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,sans-serif;color:var(--fg);"
    "background:var(--bg)}header{background:#14233a;padding:.5rem 1rem}header .home{color:#fff;"
    "font-weight:600;text-decoration:none}main{padding:1rem;max-width:1400px;margin:auto}"
    "h1{font-size:1.4rem;margin:.2rem 0 1rem}h2{font-size:1.1rem;margin:0 0 .5rem}"
    "a{color:var(--acc)}form.search{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:end;"
    "margin-bottom:1rem}form.search label{display:flex;flex-direction:column;font-size:.8rem;"
    "color:var(--mute)}input{font:inherit;padding:.25rem .4rem;border:1px solid var(--line);"
    "border-radius:4px}button{font:inherit;padding:.3rem .9rem}table{border-collapse:collapse;"
    "width:100%;background:#fff}th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid "
    "var(--line);vertical-align:top}th{font-size:.8rem;color:var(--mute);font-weight:600}"
    "tr[data-href]{cursor:pointer}tr[data-href]:hover{background:#eef3fa}td.num{text-align:right}"
    ".issuer{color:var(--mute);font-size:.85em}nav.pages{margin:1rem 0;display:flex;gap:1rem}"
    ".error{color:#a4161a;font-weight:600}dl{display:grid;grid-template-columns:max-content auto;"
    "gap:.15rem 1rem;margin:0}dt{color:var(--mute)}dd{margin:0}dl.study{background:#fff;padding:1rem;"
    "border:1px solid var(--line);border-radius:6px;margin-bottom:1rem}section.series{background:#fff;"
    "border:1px solid var(--line);border-radius:6px;padding:1rem;margin-bottom:1rem}"
    "section.series .body{display:flex;gap:1.5rem;align-items:flex-start}"
    "section.series img{width:128px;height:128px;object-fit:contain;background:#000;border-radius:4px}"
    ".modality{font-size:.8rem;background:#e4ebf5;border-radius:3px;padding:0 .35rem;margin-left:.3rem}"
    ".downloads{margin:.5rem 0 0}.uid{color:var(--mute);font-size:.8em}\n";

static const char js[] = "'use strict';\n"
                         "// A study row opens its study, except where the click was on a link.\n"
                         "document.addEventListener('click', function (e) {\n"
                         "  var row = e.target.closest('tr[data-href]');\n"
                         "  if (row && !e.target.closest('a')) window.location.assign(row.getAttribute('data-href'));\n"
                         "});\n"
                         "// A series without a picture (no pixel data, no decoder) shows none.\n"
                         "document.addEventListener('error', function (e) {\n"
                         "  if (e.target.tagName === 'IMG') e.target.closest('a').hidden = true;\n"
                         "}, true);\n";

enum MHD_Result pn_web_static(pn_web_req *r, const char *name)
{
	const char *body = NULL, *type = NULL;
	size_t len = 0;
	if (strcmp(name, "pacsnode.css") == 0) {
		body = css;
		len = sizeof(css) - 1;
		type = "text/css; charset=utf-8";
	} else if (strcmp(name, "pacsnode.js") == 0) {
		body = js;
		len = sizeof(js) - 1;
		type = "text/javascript; charset=utf-8";
	} else {
		return pn_web_error(r, MHD_HTTP_NOT_FOUND, "no such file");
	}
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	return pn_web_queue(r, MHD_HTTP_OK, resp);
}
