// Deflated datasets (PS3.5 A.5) without holding what they inflate to.
//
// Behind its zlib filter dcmtk cannot skip a value and read it later, so
// every value is read into memory: a few megabytes of deflated zeros make
// gigabytes. We inflate into an unnamed scratch file instead and let dcmtk
// read that as a plain file, where large values stay on disk.
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <unistd.h>
#include <vector>
#include <zlib.h>

#include "dataset_internal.h"

namespace
{

int write_all(int fd, const unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

// An unnamed file in `dir`: O_TMPFILE, or a named one removed at once where
// the file system has no O_TMPFILE. Nothing is left behind by a crash.
int scratch_file(const std::string &dir)
{
	int fd = open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
		return fd >= 0 ? fd : -errno;
	std::string tmpl = dir + "/.inflate-XXXXXX";
	std::vector<char> name(tmpl.begin(), tmpl.end());
	name.push_back('\0');
	fd = mkostemp(name.data(), O_CLOEXEC);
	if (fd < 0)
		return -errno;
	unlink(name.data());
	return fd;
}

} // namespace

int pn_dcm_inflate_scratch(int fd, off_t offset, const std::string &dir, uint64_t max, int *ret_fd)
{
	int out = scratch_file(dir);
	if (out < 0)
		return out;
	z_stream z;
	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, -MAX_WBITS) != Z_OK) { // raw deflate, no zlib header
		close(out);
		return -ENOMEM;
	}
	std::vector<unsigned char> in(64 * 1024), buf(256 * 1024);
	uint64_t total = 0;
	int rc = 0, zr = Z_OK;
	while (rc == 0 && zr != Z_STREAM_END) {
		ssize_t n = pread(fd, in.data(), in.size(), offset);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			break;
		}
		if (n == 0)
			break; // no end marker: dcmtk judges what there is
		offset += n;
		z.next_in = in.data();
		z.avail_in = (uInt)n;
		do {
			z.next_out = buf.data();
			z.avail_out = (uInt)buf.size();
			zr = inflate(&z, Z_NO_FLUSH);
			if (zr == Z_MEM_ERROR) {
				rc = -ENOMEM;
			} else if (zr == Z_NEED_DICT || zr == Z_DATA_ERROR || zr == Z_STREAM_ERROR) {
				rc = -EBADMSG;
			} else {
				size_t got = buf.size() - z.avail_out;
				total += got;
				rc = total > max ? -E2BIG : write_all(out, buf.data(), got);
			}
		} while (rc == 0 && z.avail_out == 0 && zr != Z_STREAM_END);
	}
	inflateEnd(&z);
	if (rc < 0) {
		close(out);
		return rc;
	}
	*ret_fd = out;
	return 0;
}
