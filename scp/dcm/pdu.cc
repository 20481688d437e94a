#include "pdu_internal.h"

#include <dcmtk/dcmnet/dcmtrans.h>

#include <cerrno>
#include <sys/socket.h>

void pn_pdu_header(unsigned char h[12], uint32_t len, unsigned char pres_id, bool command, bool last)
{
	uint32_t pdu_len = len + 6, item_len = len + 2;
	h[0] = 0x04; // P-DATA-TF
	h[1] = 0;
	for (int i = 0; i < 4; i++) {
		h[2 + i] = (unsigned char)(pdu_len >> (24 - 8 * i));
		h[6 + i] = (unsigned char)(item_len >> (24 - 8 * i));
	}
	h[10] = pres_id;
	h[11] = (unsigned char)((command ? 0x01 : 0x00) | (last ? 0x02 : 0x00));
}

void pn_pdu_append(std::vector<unsigned char> &out, const unsigned char *data, size_t len, unsigned char pres_id,
                   bool command, size_t max)
{
	max &= ~(size_t)1;
	do {
		size_t n = len < max ? len : max;
		unsigned char h[12];
		pn_pdu_header(h, (uint32_t)n, pres_id, command, n == len);
		out.insert(out.end(), h, h + 12);
		out.insert(out.end(), data, data + n);
		data += n;
		len -= n;
	} while (len > 0);
}

int pn_pdu_send_all(int sock, DcmTransportConnection *tls, const unsigned char *p, size_t len, bool more)
{
	while (len > 0) {
		errno = 0;
		ssize_t n = tls ? tls->write(const_cast<unsigned char *>(p), len)
		                : send(sock, p, len, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -EPROTO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}
