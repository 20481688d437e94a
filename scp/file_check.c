/* A stored file checked against its index row (file_check.h). */
#include "file_check.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "part10.h"

void pn_file_check(int fd, unsigned char *buf, size_t buf_len, pn_check *c)
{
	struct stat st;
	if (fstat(fd, &st) < 0) {
		c->status = PN_CHECK_UNREADABLE;
		c->err = errno;
		return;
	}
	if ((long long)st.st_size != c->size) {
		c->status = PN_CHECK_WRONG_SIZE;
		c->found_size = (long long)st.st_size;
		return;
	}
	int rc = pn_storage_checksum_fd_buf(fd, buf, buf_len, c->found_sum, &c->bytes);
	if (rc < 0) {
		c->status = PN_CHECK_UNREADABLE;
		c->err = -rc;
		return;
	}
	if (strcmp(c->found_sum, c->checksum) != 0) {
		c->status = PN_CHECK_WRONG_SUM;
		return;
	}
	/* Only the meta header is parsed: the checksum covers the rest. A
	 * file of one read still has it in the buffer. */
	pn_part10_meta meta;
	bool one_read = c->bytes <= buf_len;
	rc = one_read ? pn_part10_meta_parse(buf, (size_t)c->bytes, &meta) : pn_part10_meta_read(fd, &meta);
	if (rc == -EAGAIN && one_read)
		rc = pn_part10_meta_read(fd, &meta);
	if (rc < 0 || c->overlong || strcmp(meta.sop_instance_uid, c->sop_uid) != 0 ||
	    strcmp(meta.sop_class_uid, c->sop_class_uid) != 0)
		c->status = PN_CHECK_NOT_INSTANCE;
}
