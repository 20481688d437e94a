/* The streaming ZIP writer (web/zip.c): archives Python's zipfile reads and
 * checks (CRCs, sizes, names), including one with more entries than the
 * classic end record can count (ZIP64). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zip.h"

static void write_archive(const char *path, size_t entries, size_t bytes_each)
{
	pn_zip *z = NULL;
	assert_int_equal(pn_zip_create(&z), 0);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	pn_bytes out = {0};
	char *data = malloc(bytes_each + 1);
	for (size_t i = 0; i < entries; i++) {
		char name[64];
		snprintf(name, sizeof(name), "dir/%zu.dcm", i);
		assert_int_equal(pn_zip_entry_begin(z, name, 1700000000, &out), 0);
		for (size_t k = 0; k < bytes_each; k++)
			data[k] = (char)(i * 7 + k);
		fwrite(out.data, 1, out.len, f);
		out.len = 0;
		pn_zip_entry_data(z, data, bytes_each);
		fwrite(data, 1, bytes_each, f);
		assert_int_equal(pn_zip_entry_end(z, &out), 0);
	}
	assert_int_equal(pn_zip_finish(z, &out), 0);
	fwrite(out.data, 1, out.len, f);
	fclose(f);
	pn_bytes_free(&out);
	free(data);
	pn_zip_free(z);
}

static void check_with_python(const char *path, size_t entries, size_t bytes_each)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd),
	         "/usr/bin/python3 -c 'import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); "
	         "assert z.testzip() is None; n=z.namelist(); assert len(n)==%zu, len(n); "
	         "d=z.read(\"dir/3.dcm\") if %zu>3 else b\"\"; "
	         "assert %zu<=3 or d==bytes(((3*7+k)&255) for k in range(%zu)), d[:8]' %s",
	         entries, entries, entries, bytes_each, path);
	assert_int_equal(system(cmd), 0);
}

static void test_small(void **state)
{
	(void)state;
	char path[] = "/tmp/pn_test_zip_XXXXXX";
	int fd = mkstemp(path);
	close(fd);
	write_archive(path, 10, 1000);
	check_with_python(path, 10, 1000);
	write_archive(path, 1, 0); /* an empty entry */
	check_with_python(path, 1, 0);
	unlink(path);
}

static void test_zip64_entry_count(void **state)
{
	(void)state;
	char path[] = "/tmp/pn_test_zip_XXXXXX";
	int fd = mkstemp(path);
	close(fd);
	write_archive(path, 70000, 4);
	check_with_python(path, 70000, 4);
	unlink(path);
}

static void test_bad_names(void **state)
{
	(void)state;
	pn_zip *z = NULL;
	pn_bytes out = {0};
	assert_int_equal(pn_zip_create(&z), 0);
	assert_int_not_equal(pn_zip_entry_begin(z, "", 0, &out), 0);
	assert_int_not_equal(pn_zip_entry_begin(z, "/abs", 0, &out), 0);
	assert_int_equal(pn_zip_entry_begin(z, "ok", 0, &out), 0);
	assert_int_not_equal(pn_zip_entry_begin(z, "second while open", 0, &out), 0);
	assert_int_not_equal(pn_zip_finish(z, &out), 0);
	pn_bytes_free(&out);
	pn_zip_free(z);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_small),
	    cmocka_unit_test(test_zip64_entry_count),
	    cmocka_unit_test(test_bad_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
