/* A small well-formedness check for the audit messages we build, for the
 * fuzz target and the unit tests: the RFC 5424 header, a BOM, then XML 1.0
 * whose tags balance, whose attribute values are quoted and hold no '<',
 * whose '&' start only the five entities, with valid UTF-8 throughout and no
 * control character or newline anywhere. Returns NULL or what is wrong. */
#ifndef PN_XML_CHECK_H
#define PN_XML_CHECK_H

#include <stddef.h>
#include <string.h>

static const char *pn_xml_utf8_ok(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned char c = s[i];
		size_t len = c < 0x80                 ? 1
		             : c >= 0xC2 && c <= 0xDF ? 2
		             : c >= 0xE0 && c <= 0xEF ? 3
		             : c >= 0xF0 && c <= 0xF4 ? 4
		                                      : 0;
		if (len == 0 || i + len > n)
			return "invalid UTF-8";
		for (size_t k = 1; k < len; k++)
			if ((s[i + k] & 0xC0) != 0x80)
				return "invalid UTF-8";
		if (c < 0x20)
			return "a control character";
		if (len == 3 && c == 0xEF && s[i + 1] == 0xBF && (s[i + 2] == 0xBE || s[i + 2] == 0xBF))
			return "U+FFFE or U+FFFF";
		if (len == 3 && c == 0xED && s[i + 1] >= 0xA0)
			return "a surrogate";
		i += len;
	}
	return NULL;
}

static int pn_xml_name_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
	       c == ':' || c == '.';
}

static const char *pn_xml_entity_ok(const char *p, const char *end)
{
	static const char *const ents[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
	for (size_t i = 0; i < 5; i++) {
		size_t l = strlen(ents[i]);
		if ((size_t)(end - p) >= l && memcmp(p, ents[i], l) == 0)
			return NULL;
	}
	return "an '&' that starts no entity";
}

static const char *pn_xml_check(const char *msg, size_t len)
{
	const char *end = msg + len;
	if (pn_xml_utf8_ok((const unsigned char *)msg, len))
		return pn_xml_utf8_ok((const unsigned char *)msg, len);
	if (len < 4 || msg[0] != '<')
		return "no <PRI>";
	const char *bom = NULL;
	for (const char *q = msg; q + 3 <= end; q++)
		if (memcmp(q, "\xEF\xBB\xBF", 3) == 0) {
			bom = q;
			break;
		}
	if (!bom || bom - msg < 16 || memcmp(bom - 16, " IHE+RFC-3881 - ", 16) != 0)
		return "no MSGID IHE+RFC-3881 before the BOM";
	const char *p = bom + 3;
	const char *decl = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";
	if ((size_t)(end - p) < strlen(decl) || memcmp(p, decl, strlen(decl)) != 0)
		return "no XML declaration";
	p += strlen(decl);
	char stack[64][64];
	int depth = 0, roots = 0;
	while (p < end) {
		if (*p == '&') {
			const char *e = pn_xml_entity_ok(p, end);
			if (e)
				return e;
			p++;
			continue;
		}
		if (*p == '>')
			return "a raw '>' in text";
		if (*p != '<') {
			if (depth == 0)
				return "text outside the root";
			p++;
			continue;
		}
		p++;
		int closing = p < end && *p == '/';
		if (closing)
			p++;
		const char *name = p;
		while (p < end && pn_xml_name_char((unsigned char)*p))
			p++;
		size_t nl = (size_t)(p - name);
		if (nl == 0 || nl >= sizeof(stack[0]))
			return "a bad tag name";
		if (closing) {
			if (p >= end || *p != '>')
				return "a bad closing tag";
			if (depth == 0 || strlen(stack[depth - 1]) != nl || memcmp(stack[depth - 1], name, nl) != 0)
				return "tags do not balance";
			depth--;
			p++;
			continue;
		}
		/* attributes */
		for (;;) {
			while (p < end && *p == ' ')
				p++;
			if (p >= end)
				return "a tag not closed";
			if (*p == '>' || (*p == '/' && p + 1 < end && p[1] == '>'))
				break;
			const char *an = p;
			while (p < end && pn_xml_name_char((unsigned char)*p))
				p++;
			if (p == an || p + 1 >= end || p[0] != '=' || p[1] != '"')
				return "a bad attribute";
			p += 2;
			while (p < end && *p != '"') {
				if (*p == '<')
					return "a '<' in an attribute value";
				if (*p == '&') {
					const char *e = pn_xml_entity_ok(p, end);
					if (e)
						return e;
				}
				p++;
			}
			if (p >= end)
				return "an unterminated attribute value";
			p++;
		}
		if (depth == 0 && roots++ > 0)
			return "two roots";
		if (*p == '/') {
			p += 2;
			continue;
		}
		if (depth == 64)
			return "too deep";
		memcpy(stack[depth], name, nl);
		stack[depth][nl] = '\0';
		depth++;
		p++;
	}
	if (depth != 0)
		return "tags left open";
	if (roots != 1)
		return "no root element";
	return NULL;
}

#endif
