#include "dicom_values.h"

#include "charset.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies the first value (up to '\\'), trimmed, into buf. */
static bool first_value(const char *s, char *buf, size_t len)
{
	while (*s == ' ')
		s++;
	size_t n = strcspn(s, "\\");
	while (n > 0 && s[n - 1] == ' ')
		n--;
	if (n == 0 || n >= len)
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return true;
}

static bool all_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return false;
	return true;
}

static int num(const char *s, size_t n)
{
	int v = 0;
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (s[i] - '0');
	return v;
}

int pn_days_in_month(int y, int m)
{
	static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return m == 2 && leap ? 29 : mdays[m - 1];
}

bool pn_da_to_iso(const char *da, char out[11])
{
	char v[16];
	if (!first_value(da, v, sizeof(v)))
		return false;
	char d[9];
	if (strlen(v) == 8 && all_digits(v, 8)) {
		memcpy(d, v, 8);
	} else if (strlen(v) == 10 && v[4] == '.' && v[7] == '.' && all_digits(v, 4) && all_digits(v + 5, 2) &&
	           all_digits(v + 8, 2)) {
		memcpy(d, v, 4);
		memcpy(d + 4, v + 5, 2);
		memcpy(d + 6, v + 8, 2);
	} else {
		return false;
	}
	int y = num(d, 4), m = num(d + 4, 2), day = num(d + 6, 2);
	if (y < 1 || m < 1 || m > 12 || day < 1 || day > pn_days_in_month(y, m))
		return false;
	snprintf(out, 11, "%04u-%02u-%02u", (unsigned)y % 10000u, (unsigned)m % 100u, (unsigned)day % 100u);
	return true;
}

bool pn_tm_to_iso(const char *tm, char out[16])
{
	char v[32];
	if (!first_value(tm, v, sizeof(v)))
		return false;
	/* drop the old-style colons */
	char t[32];
	size_t k = 0;
	for (size_t i = 0; v[i]; i++)
		if (v[i] != ':')
			t[k++] = v[i];
	t[k] = '\0';
	size_t int_len = strcspn(t, ".");
	if (!(int_len == 2 || int_len == 4 || int_len == 6) || !all_digits(t, int_len))
		return false;
	int hh = num(t, 2);
	int mm = int_len >= 4 ? num(t + 2, 2) : 0;
	int ss = int_len >= 6 ? num(t + 4, 2) : 0;
	if (hh > 23 || mm > 59 || ss > 60)
		return false;
	if (ss == 60) /* leap second: PostgreSQL's time accepts 60 only as 24:00 */
		ss = 59;
	const char *frac = t + int_len;
	if (*frac == '.') {
		frac++;
		size_t fl = strlen(frac);
		if (int_len != 6 || fl == 0 || fl > 6 || !all_digits(frac, fl))
			return false;
		snprintf(out, 16, "%02u:%02u:%02u.%.6s", (unsigned)hh % 100u, (unsigned)mm % 100u, (unsigned)ss % 100u,
		         frac);
	} else {
		snprintf(out, 16, "%02u:%02u:%02u", (unsigned)hh % 100u, (unsigned)mm % 100u, (unsigned)ss % 100u);
	}
	return true;
}

bool pn_tz_offset_parse(const char *s, int *ret_minutes)
{
	while (*s == ' ')
		s++;
	size_t n = strlen(s);
	while (n > 0 && s[n - 1] == ' ')
		n--;
	if (n != 5 || (s[0] != '+' && s[0] != '-') || !all_digits(s + 1, 4))
		return false;
	int hh = num(s + 1, 2), mm = num(s + 3, 2);
	int v = (s[0] == '-' ? -1 : 1) * (hh * 60 + mm);
	if (mm > 59 || v < -12 * 60 || v > 14 * 60)
		return false;
	*ret_minutes = v;
	return true;
}

/* Days since 0001-01-01 of a civil date, and back (proleptic Gregorian). */
static long days_of(int y, int m, int d)
{
	long n = d - 1;
	for (int i = 1; i < m; i++)
		n += pn_days_in_month(y, i);
	long py = y - 1;
	return n + py * 365 + py / 4 - py / 100 + py / 400;
}

static void date_of(long days, int *y, int *m, int *d)
{
	int yy = (int)(days / 366) + 1; /* at most the year, then walk up */
	while (days_of(yy + 1, 1, 1) <= days)
		yy++;
	long rest = days - days_of(yy, 1, 1);
	int mm = 1;
	while (rest >= pn_days_in_month(yy, mm))
		rest -= pn_days_in_month(yy, mm++);
	*y = yy;
	*m = mm;
	*d = (int)rest + 1;
}

bool pn_da_tm_shift(const char *da, const char *tm, int minutes, char da_out[9], char tm_out[24])
{
	char t[24];
	size_t k = 0;
	for (size_t i = 0; tm[i]; i++) {
		if (tm[i] == ':')
			continue;
		if (k + 1 >= sizeof t)
			return false;
		t[k++] = tm[i];
	}
	t[k] = '\0';
	size_t int_len = strcspn(t, ".");
	if (!(int_len == 2 || int_len == 4 || int_len == 6) || !all_digits(t, int_len) ||
	    (t[int_len] == '.' &&
	     (int_len != 6 || strlen(t + 7) < 1 || strlen(t + 7) > 6 || !all_digits(t + 7, strlen(t + 7)))))
		return false;
	int hh = num(t, 2), mm = int_len >= 4 ? num(t + 2, 2) : 0;
	if (hh > 23 || mm > 59 || (int_len >= 6 && num(t + 4, 2) > 60))
		return false;
	bool have_date = da && da[0];
	int y = 0, mo = 0, d = 0;
	if (have_date) {
		if (strlen(da) != 8 || !all_digits(da, 8))
			return false;
		y = num(da, 4), mo = num(da + 4, 2), d = num(da + 6, 2);
		if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > pn_days_in_month(y, mo))
			return false;
	}
	long total = (long)hh * 60 + mm + minutes;
	long carry = total >= 0 ? total / 1440 : -((-total + 1439) / 1440);
	total -= carry * 1440;
	if (have_date) {
		long days = days_of(y, mo, d) + carry;
		if (days < 0 || days >= days_of(10000, 1, 1))
			return false;
		date_of(days, &y, &mo, &d);
		snprintf(da_out, 9, "%04u%02u%02u", (unsigned)y % 10000u, (unsigned)mo % 100u, (unsigned)d % 100u);
	}
	unsigned nh = (unsigned)(total / 60), nm = (unsigned)(total % 60);
	if (int_len == 2 && nm == 0)
		snprintf(tm_out, 24, "%02u", nh % 100u);
	else
		snprintf(tm_out, 24, "%02u%02u%s", nh % 100u, nm % 100u, t + (int_len == 2 ? 2 : 4));
	return true;
}

bool pn_is_normalise(const char *is, char out[16])
{
	char v[32];
	if (!first_value(is, v, sizeof(v)))
		return false;
	char *end;
	errno = 0;
	long long x = strtoll(v, &end, 10);
	if (errno || *end != '\0' || x < -2147483648LL || x > 2147483647LL)
		return false;
	snprintf(out, 16, "%lld", x);
	return true;
}

bool pn_ds_normalise(const char *ds, char out[32])
{
	char v[64];
	if (!first_value(ds, v, sizeof(v)))
		return false;
	char *end;
	errno = 0;
	double x = strtod(v, &end);
	if (errno || *end != '\0' || !isfinite(x))
		return false;
	snprintf(out, 32, "%.17g", x);
	return true;
}

size_t pn_utf8_sanitise(char *s)
{
	size_t fixed = 0;
	unsigned char *p = (unsigned char *)s;
	size_t left = strlen(s);
	while (*p) {
		size_t len = pn_utf8_sequence(p, left);
		if (len == 1 && *p < 0x20 && *p != '\t' && *p != '\r' && *p != '\n' && *p != 0x1b)
			len = 0;
		if (len == 0) {
			*p++ = '?';
			left--;
			fixed++;
			continue;
		}
		p += len;
		left -= len;
	}
	return fixed;
}

void pn_trim(char *s)
{
	size_t start = strspn(s, " ");
	size_t n = strlen(s + start);
	while (n > 0 && s[start + n - 1] == ' ')
		n--;
	memmove(s, s + start, n);
	s[n] = '\0';
}
