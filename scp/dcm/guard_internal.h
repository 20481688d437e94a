// A guard around dcmtk's reading of bytes from the network or from files
// that came from it. Not part of pn_dcm.h.
#ifndef PN_DCM_GUARD_INTERNAL_H
#define PN_DCM_GUARD_INTERNAL_H

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcitem.h>

#include <cstddef>
#include <cstdint>
#include <memory>

// dcmtk reads a sequence by recursion, a few hundred bytes of stack per
// level and no limit: 20,000 nested empty sequences (720 KB) overflowed a
// worker's 8 MiB stack. While a ParseGuard lives, the adapter's own
// streams stop early (parse_stack_exhausted, below) and every allocation of the
// thread (each level allocates its sequence and item) checks how far the
// stack has grown since the guard was made; past the budget (1 MiB, or a
// quarter of RLIMIT_STACK if that is smaller) it throws std::bad_alloc,
// which unwinds through dcmtk to the adapter's catch, and tripped() says
// why. Guards do not nest: an inner one leaves the outer one in charge.
class ParseGuard
{
      public:
	ParseGuard();
	~ParseGuard();
	ParseGuard(const ParseGuard &) = delete;
	ParseGuard &operator=(const ParseGuard &) = delete;
	bool tripped() const;

      private:
	bool armed_here_;
};

// For the input streams the adapter makes (files, pieces in memory): past
// half the budget, reading stops. dcmtk then unwinds by its error returns
// and frees what it built, where a throw loses it; the throw remains for
// the streams dcmtk makes itself (commands, identifiers). Sets tripped().
bool parse_stack_exhausted();

// A stored file (a regular file) parsed under a ParseGuard, its pixel data
// left on disk until used (dcmtk's read limit), the codecs registered: 0,
// -ENOENT, -EBADMSG (not a regular file, unreadable, no dataset).
int load_stored_file(const char *path, std::unique_ptr<DcmFileFormat> &ff);

// Whether a throw ever unwound a parse in this process: the objects dcmtk
// had built on the way down are lost (a few hundred KB), so a worker is
// replaced after its association.
bool parse_memory_lost();

// The deepest nesting of sequences in `item` (0: none), counted without
// recursion.
int nesting_depth(DcmItem *item);

#endif
