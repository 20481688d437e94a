/* pacsnodectl: the operator's commands, on the node's own configuration
 * file (docs/operations.md). Each command is one function; exit status 0
 * only when it all went well. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "log.h"

#define DEFAULT_CONFIG "/etc/pacsnode/pacsnode.conf"

static const struct {
	const char *name, *summary;
	int (*run)(const pn_config *cfg, int argc, char **argv);
} commands[] = {
    {"status", "is the node running; what the index and the storage hold", pn_ctl_status},
    {"passwd", "add a web user, change one's password or role, or remove one", pn_ctl_passwd},
    {"verify", "check every stored file against the index; list orphans", pn_ctl_verify},
    {"import", "store DICOM files and folders as C-STORE would", pn_ctl_import},
    {"reindex", "rebuild the index from the stored files into an empty database", pn_ctl_reindex},
    {"delete", "remove a patient, a study, a series or an instance: rows and files", pn_ctl_delete},
    {"retention", "list what the node's retention would delete now (--dry-run)", pn_ctl_retention},
};

static void usage(FILE *out)
{
	fprintf(out, "usage: pacsnodectl [-c FILE] COMMAND [ARGS]\n"
	             "  -c, --config FILE   the node's configuration (default " DEFAULT_CONFIG ")\n"
	             "commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "pacsnodectl COMMAND --help: the command's own options\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
	const char *path = DEFAULT_CONFIG;
	int opt;
	/* options before the command only: the command parses the rest */
	while ((opt = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	const char *name = argv[optind];
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(name, commands[i].name) != 0)
			continue;
		/* a command's --help needs no configuration: it gets the
		 * built-in defaults (an empty file), so that it answers on a
		 * machine where the node is not set up yet */
		for (int a = optind + 1; a < argc && strcmp(argv[a], "--") != 0; a++)
			if (strcmp(argv[a], "--help") == 0 || strcmp(argv[a], "-h") == 0)
				path = "/dev/null";
		pn_config *cfg = NULL;
		char err[512];
		if (pn_config_load(path, &cfg, err, sizeof(err)) < 0) {
			fprintf(stderr, "pacsnodectl: %s\n", err);
			return 1;
		}
		pn_log_set_level(PN_LOG_WARNING);
		/* the command's argv: its name first, as getopt wants */
		int cmd_argc = argc - optind;
		char **cmd_argv = argv + optind;
		optind = 1;
		int rc = commands[i].run(cfg, cmd_argc, cmd_argv);
		pn_config_free(cfg);
		return rc;
	}
	fprintf(stderr, "pacsnodectl: unknown command \"%s\"\n", name);
	usage(stderr);
	return 2;
}
