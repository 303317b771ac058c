// tagwire: tagged messages and bulk transfers between the parties of a
// distributed computation.  This umbrella header is the whole public API.

#ifndef TAGWIRE_TAGWIRE_H
#define TAGWIRE_TAGWIRE_H

#define TW_VERSION_MAJOR 0
#define TW_VERSION_MINOR 1
#define TW_VERSION_PATCH 0

#include <tagwire/status.h>
#include <tagwire/link.h>
#include <tagwire/channel.h>
#include <tagwire/ring.h>
#include <tagwire/engine.h>

#endif // TAGWIRE_TAGWIRE_H
