/*
 * ws2tcpip.h - see winsock2.h. inet_ntop and inet_pton are the POSIX ones,
 * as Windows's take the same arguments; InetNtopA / InetPtonA name them.
 */
#ifndef RIIS_WS2TCPIP_H
#define RIIS_WS2TCPIP_H

#include "winsock2.h"

#ifndef InetNtopA
#define InetNtopA inet_ntop
#endif
#ifndef InetPtonA
#define InetPtonA inet_pton
#endif

#endif /* RIIS_WS2TCPIP_H */
