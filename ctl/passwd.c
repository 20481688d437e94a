/* pacsnodectl passwd: a web user's line in [http] users (yescrypt hash
 * with a fresh salt), changed by replacing the file whole; the node reads
 * it again at the next request. The password comes from the terminal
 * (asked twice, not shown) or from stdin's first line. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "ctl.h"
#include "users.h"

static void usage(FILE *out)
{
	fprintf(out, "usage: pacsnodectl passwd [--role read|write] [--delete] [--file USERS] NAME\n"
	             "  sets NAME's password (asked on the terminal, else read from stdin's first line)\n"
	             "  --role      read (the default for a new user) or write (may store with STOW-RS)\n"
	             "  --delete    removes NAME\n"
	             "  --file      the users file (default: [http] users of the configuration)\n");
}

/* One line from fd into buf, without its newline; -1 at EOF. */
static int read_line(FILE *in, char *buf, size_t len)
{
	if (!fgets(buf, (int)len, in))
		return -1;
	buf[strcspn(buf, "\r\n")] = '\0';
	return 0;
}

static int ask(const char *prompt, char *buf, size_t len)
{
	FILE *tty = fopen("/dev/tty", "r+e");
	if (!tty)
		return -1;
	struct termios old, quiet;
	tcgetattr(fileno(tty), &old);
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	fprintf(tty, "%s", prompt);
	fflush(tty);
	tcsetattr(fileno(tty), TCSAFLUSH, &quiet);
	int rc = read_line(tty, buf, len);
	tcsetattr(fileno(tty), TCSAFLUSH, &old);
	fprintf(tty, "\n");
	fclose(tty);
	return rc;
}

int pn_ctl_passwd(const pn_config *cfg, int argc, char **argv)
{
	static const struct option opts[] = {{"role", required_argument, NULL, 'r'},
	                                     {"delete", no_argument, NULL, 'd'},
	                                     {"file", required_argument, NULL, 'f'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {NULL, 0, NULL, 0}};
	const char *file = cfg->http_users, *role_name = "read";
	bool del = false;
	int opt;
	while ((opt = getopt_long(argc, argv, "r:df:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'r':
			role_name = optarg;
			break;
		case 'd':
			del = true;
			break;
		case 'f':
			file = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	const char *name = argv[optind];
	if (!file) {
		fprintf(stderr, "pacsnodectl passwd: %s has no [http] users file; give --file\n", cfg->source);
		return 2;
	}
	pn_web_role role = strcmp(role_name, "write") == 0 ? PN_ROLE_WRITE : PN_ROLE_READ;
	if (strcmp(role_name, "read") != 0 && strcmp(role_name, "write") != 0) {
		fprintf(stderr, "pacsnodectl passwd: --role is read or write\n");
		return 2;
	}
	char err[512];
	if (del) {
		if (pn_web_users_set(file, name, NULL, role, err, sizeof(err)) < 0) {
			fprintf(stderr, "pacsnodectl passwd: %s\n", err);
			return 1;
		}
		printf("removed user \"%s\" from %s\n", name, file);
		return 0;
	}
	char pw[512], again[512];
	if (isatty(STDIN_FILENO)) {
		if (ask("password: ", pw, sizeof(pw)) < 0 || ask("again: ", again, sizeof(again)) < 0) {
			fprintf(stderr, "pacsnodectl passwd: no terminal to ask the password on\n");
			return 1;
		}
		if (strcmp(pw, again) != 0) {
			fprintf(stderr, "pacsnodectl passwd: the two passwords differ; nothing changed\n");
			return 1;
		}
	} else if (read_line(stdin, pw, sizeof(pw)) < 0) {
		fprintf(stderr, "pacsnodectl passwd: no password on stdin\n");
		return 1;
	}
	if (strlen(pw) < 8) {
		fprintf(stderr, "pacsnodectl passwd: a password has at least 8 characters; nothing changed\n");
		return 1;
	}
	char hash[256];
	int rc = pn_web_users_hash(pw, hash, sizeof(hash));
	memset(pw, 0, sizeof(pw));
	memset(again, 0, sizeof(again));
	if (rc < 0) {
		fprintf(stderr, "pacsnodectl passwd: could not hash the password: %s\n", strerror(-rc));
		return 1;
	}
	if (pn_web_users_set(file, name, hash, role, err, sizeof(err)) < 0) {
		fprintf(stderr, "pacsnodectl passwd: %s\n", err);
		return 1;
	}
	printf("user \"%s\" (%s) set in %s\n", name, role == PN_ROLE_WRITE ? "write" : "read", file);
	return 0;
}
