#include "guard_internal.h"
#include "pn_dcm.h"

#include <dcmtk/dcmdata/dcsequen.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <sys/resource.h>
#include <utility>
#include <vector>

namespace
{

struct GuardState {
	bool armed = false;
	bool tripped = false;
	uintptr_t base = 0;
	size_t budget = 0;
};

thread_local GuardState g_guard;
bool g_lost = false;

size_t stack_budget()
{
	static const size_t budget = [] {
		size_t limit = 8u << 20;
		struct rlimit r;
		if (getrlimit(RLIMIT_STACK, &r) == 0 && r.rlim_cur != RLIM_INFINITY)
			limit = (size_t)r.rlim_cur;
		return std::min<size_t>(1u << 20, limit / 4);
	}();
	return budget;
}

// Called by every allocation: cheap unless a guard is armed.
inline void check_stack()
{
	GuardState &g = g_guard;
	if (!g.armed)
		return;
	uintptr_t here = (uintptr_t)__builtin_frame_address(0);
	if (here < g.base && g.base - here > g.budget) {
		// Disarmed first: what the unwinding allocates must not throw.
		g.armed = false;
		g.tripped = true;
		g_lost = true;
		throw std::bad_alloc();
	}
}

} // namespace

ParseGuard::ParseGuard() : armed_here_(!g_guard.armed)
{
	if (armed_here_) {
		g_guard.tripped = false;
		g_guard.budget = stack_budget();
		g_guard.base = (uintptr_t)__builtin_frame_address(0);
		g_guard.armed = true;
	}
}

ParseGuard::~ParseGuard()
{
	if (armed_here_)
		g_guard.armed = false;
}

bool ParseGuard::tripped() const
{
	return g_guard.tripped;
}

bool parse_stack_exhausted()
{
	GuardState &g = g_guard;
	if (g.tripped)
		return true;
	if (!g.armed)
		return false;
	uintptr_t here = (uintptr_t)__builtin_frame_address(0);
	if (here < g.base && g.base - here > g.budget / 2)
		g.tripped = true;
	return g.tripped;
}

bool parse_memory_lost()
{
	return g_lost;
}

extern "C" bool pn_dcm_parse_memory_lost(void)
{
	return parse_memory_lost();
}

int nesting_depth(DcmItem *item)
{
	// (container, its last child visited, depth of the container)
	std::vector<std::pair<DcmObject *, int>> todo;
	todo.emplace_back(item, 0);
	int deepest = 0;
	while (!todo.empty()) {
		std::pair<DcmObject *, int> at = todo.back();
		todo.pop_back();
		DcmObject *obj = nullptr;
		while ((obj = at.first->nextInContainer(obj)) != nullptr) {
			if (obj->ident() != EVR_SQ)
				continue;
			int depth = at.second + 1;
			deepest = std::max(deepest, depth);
			DcmObject *it = nullptr;
			while ((it = obj->nextInContainer(it)) != nullptr)
				todo.emplace_back(it, depth);
		}
	}
	return deepest;
}

// The allocations the guard watches. The array and nothrow forms of the
// standard library call these; delete pairs with them.
void *operator new(std::size_t n)
{
	check_stack();
	void *p = std::malloc(n ? n : 1);
	if (!p)
		throw std::bad_alloc();
	return p;
}

void operator delete(void *p) noexcept
{
	std::free(p);
}

void operator delete(void *p, std::size_t) noexcept
{
	std::free(p);
}
