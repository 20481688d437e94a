// Process-wide dcmtk set-up: route dcmtk's logger into ours, no reverse DNS.
#include "pn_dcm.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcobject.h>
#include <dcmtk/dcmnet/dul.h>
#include <dcmtk/oflog/appender.h>
#include <dcmtk/oflog/logger.h>
#include <dcmtk/oflog/oflog.h>
#include <dcmtk/oflog/spi/logevent.h>

#include <cerrno>
#include <string>

namespace
{

pn_dcm_log_fn g_log = nullptr;

// Forwards dcmtk's log events to the C callback, one line each.
class PnAppender : public dcmtk::log4cplus::Appender
{
      public:
	~PnAppender() override
	{
		destructorImpl();
	}
	void close() override
	{
	}

      protected:
	void append(const dcmtk::log4cplus::spi::InternalLoggingEvent &ev) override
	{
		if (!g_log)
			return;
		int ll = ev.getLogLevel();
		int level = ll >= dcmtk::log4cplus::ERROR_LOG_LEVEL  ? PN_DCM_LOG_ERROR
		            : ll >= dcmtk::log4cplus::WARN_LOG_LEVEL ? PN_DCM_LOG_WARNING
		            : ll >= dcmtk::log4cplus::INFO_LOG_LEVEL ? PN_DCM_LOG_INFO
		                                                     : PN_DCM_LOG_DEBUG;
		std::string msg = "dcmtk: ";
		msg += ev.getMessage().c_str();
		g_log(level, msg.c_str());
	}
};

} // namespace

extern "C" int pn_dcm_init(pn_dcm_log_fn log, int level)
{
	try {
		g_log = log;
		dcmDisableGethostbyaddr.set(OFTrue);
		// We index what the sender sent: dcmtk must not "repair" values
		// while reading (it would strip spaces from a UID, say, so the row
		// and the file would disagree and the bad UID would pass).
		dcmEnableAutomaticInputDataCorrection.set(OFFalse);
		dcmtk::log4cplus::Logger root = dcmtk::log4cplus::Logger::getRoot();
		root.removeAllAppenders();
		root.addAppender(dcmtk::log4cplus::SharedAppenderPtr(new PnAppender()));
		// dcmtk is chatty at INFO; its warnings and errors are what we want
		// unless we are debugging.
		root.setLogLevel(level >= PN_DCM_LOG_DEBUG ? dcmtk::log4cplus::DEBUG_LOG_LEVEL
		                                           : dcmtk::log4cplus::WARN_LOG_LEVEL);
		return 0;
	} catch (...) {
		return -ENOMEM;
	}
}
