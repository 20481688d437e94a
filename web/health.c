/* /health: for a load balancer or a monitor. 200 once the database answers
 * a query through this worker's connection, 503 otherwise; no login, and
 * nothing in the answer a stranger could use. */
#include <stdio.h>

#include "db.h"
#include "web_internal.h"

enum MHD_Result pn_web_health(pn_web_req *r)
{
	int version = 0;
	if (!r->ctx->db || pn_db_ensure_connected(r->ctx->db) < 0 || pn_db_schema_version(r->ctx->db, &version) < 0)
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "the database does not answer");
	char body[64];
	int n = snprintf(body, sizeof(body), "{\"status\":\"ok\"}\n");
	return pn_web_reply(r, MHD_HTTP_OK, "application/json", body, (size_t)n);
}
