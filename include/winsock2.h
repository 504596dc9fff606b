/*
 * winsock2.h - the socket address names IIS native modules use with
 * IHttpRequest::GetRemoteAddress / GetLocalAddress, for building them on
 * Linux against riis (see httpserv.h). Not the Windows SDK header: Windows
 * Sockets calls (WSAStartup, closesocket, ...) are not here; use the POSIX
 * ones. The address structures are the Linux ones under their Windows
 * names: `sin_family`, `sin_port`, `sin_addr.s_addr`, `sin6_addr.s6_addr`
 * read as on Windows (Windows's `S_un` and `u` union members do not exist).
 */
#ifndef RIIS_WINSOCK2_H
#define RIIS_WINSOCK2_H

#include "windows.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

/* Each name is left to a source that defines it as a macro already. */
#ifndef SOCKADDR
typedef struct sockaddr SOCKADDR;
#endif
#ifndef PSOCKADDR
typedef struct sockaddr *PSOCKADDR;
#endif
#ifndef LPSOCKADDR
typedef struct sockaddr *LPSOCKADDR;
#endif
#ifndef SOCKADDR_IN
typedef struct sockaddr_in SOCKADDR_IN;
#endif
#ifndef PSOCKADDR_IN
typedef struct sockaddr_in *PSOCKADDR_IN;
#endif
#ifndef LPSOCKADDR_IN
typedef struct sockaddr_in *LPSOCKADDR_IN;
#endif
#ifndef SOCKADDR_IN6
typedef struct sockaddr_in6 SOCKADDR_IN6;
#endif
#ifndef PSOCKADDR_IN6
typedef struct sockaddr_in6 *PSOCKADDR_IN6;
#endif
#ifndef LPSOCKADDR_IN6
typedef struct sockaddr_in6 *LPSOCKADDR_IN6;
#endif
#ifndef SOCKADDR_STORAGE
typedef struct sockaddr_storage SOCKADDR_STORAGE;
#endif
#ifndef PSOCKADDR_STORAGE
typedef struct sockaddr_storage *PSOCKADDR_STORAGE;
#endif
#ifndef IN_ADDR
typedef struct in_addr IN_ADDR;
#endif
#ifndef PIN_ADDR
typedef struct in_addr *PIN_ADDR;
#endif
#ifndef IN6_ADDR
typedef struct in6_addr IN6_ADDR;
#endif
#ifndef PIN6_ADDR
typedef struct in6_addr *PIN6_ADDR;
#endif
#ifndef ADDRESS_FAMILY
typedef sa_family_t ADDRESS_FAMILY;
#endif

#endif /* RIIS_WINSOCK2_H */
