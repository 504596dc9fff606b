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

#ifndef RIIS_SOCKADDR_TYPES_DEFINED
#define RIIS_SOCKADDR_TYPES_DEFINED
typedef struct sockaddr SOCKADDR, *PSOCKADDR, *LPSOCKADDR;
typedef struct sockaddr_in SOCKADDR_IN, *PSOCKADDR_IN, *LPSOCKADDR_IN;
typedef struct sockaddr_in6 SOCKADDR_IN6, *PSOCKADDR_IN6, *LPSOCKADDR_IN6;
typedef struct sockaddr_storage SOCKADDR_STORAGE, *PSOCKADDR_STORAGE;
typedef struct in_addr IN_ADDR, *PIN_ADDR;
typedef struct in6_addr IN6_ADDR, *PIN6_ADDR;
typedef sa_family_t ADDRESS_FAMILY;
#endif

#endif /* RIIS_WINSOCK2_H */
