/*
 * sal.h - the Microsoft source-code annotations (SAL) as empty macros, so
 * that IIS native module sources that use them build on Linux with GCC or
 * Clang. The annotations carry no meaning here.
 *
 * The legacy annotations __in, __out, __inout and __reserved are NOT defined
 * by default: libstdc++ and the Linux kernel headers use those very names
 * for parameters and members, so defining them breaks any standard header
 * included afterwards. Define RIIS_SAL_LEGACY_IN_OUT before including this
 * header to get them anyway (then include every standard header first).
 * Every other legacy annotation (__in_opt, __out_bcount(x), ...) is defined.
 */
#ifndef RIIS_SAL_H
#define RIIS_SAL_H

/* ------------------------------------------------------ SAL 2 annotations */

#define _In_
#define _In_opt_
#define _In_z_
#define _In_opt_z_
#define _In_reads_(size)
#define _In_reads_opt_(size)
#define _In_reads_bytes_(size)
#define _In_reads_bytes_opt_(size)
#define _In_reads_z_(size)
#define _In_reads_or_z_(size)
#define _In_range_(lo, hi)

#define _Out_
#define _Out_opt_
#define _Out_writes_(size)
#define _Out_writes_opt_(size)
#define _Out_writes_z_(size)
#define _Out_writes_bytes_(size)
#define _Out_writes_bytes_opt_(size)
#define _Out_writes_to_(size, count)
#define _Out_writes_to_opt_(size, count)
#define _Out_writes_all_(size)
#define _Out_writes_bytes_to_(size, count)
#define _Out_writes_bytes_to_opt_(size, count)
#define _Out_writes_bytes_all_(size)
#define _Out_range_(lo, hi)

#define _Inout_
#define _Inout_opt_
#define _Inout_z_
#define _Inout_updates_(size)
#define _Inout_updates_opt_(size)
#define _Inout_updates_z_(size)
#define _Inout_updates_bytes_(size)
#define _Inout_updates_bytes_opt_(size)
#define _Inout_updates_to_(size, count)
#define _Inout_updates_bytes_to_(size, count)

#define _Outptr_
#define _Outptr_opt_
#define _Outptr_result_maybenull_
#define _Outptr_opt_result_maybenull_
#define _Outptr_result_z_
#define _Outptr_result_buffer_(size)
#define _Outptr_result_bytebuffer_(size)
#define _COM_Outptr_
#define _COM_Outptr_opt_

#define _Ret_
#define _Ret_z_
#define _Ret_maybenull_
#define _Ret_notnull_
#define _Ret_opt_
#define _Ret_writes_(size)
#define _Ret_writes_bytes_(size)
#define _Result_nullonfailure_
#define _Result_zeroonfailure_

#define _Check_return_
#define _Must_inspect_result_
#define _Success_(expr)
#define _Return_type_success_(expr)
#define _Use_decl_annotations_
#define _Printf_format_string_
#define _Scanf_format_string_
#define _Null_terminated_
#define _NullNull_terminated_
#define _Notnull_
#define _Maybenull_
#define _Reserved_
#define _Pre_
#define _Post_
#define _Pre_notnull_
#define _Pre_maybenull_
#define _Pre_null_
#define _Post_z_
#define _Post_invalid_
#define _Post_ptr_invalid_
#define _Post_null_
#define _Post_notnull_
#define _Post_maybenull_
#define _Pre_satisfies_(expr)
#define _Post_satisfies_(expr)
#define _When_(expr, annotations)
#define _Field_size_(size)
#define _Field_size_opt_(size)
#define _Field_size_bytes_(size)
#define _Field_size_bytes_opt_(size)
#define _Field_size_part_(size, count)
#define _Field_size_bytes_part_(size, count)
#define _Field_z_
#define _Field_range_(lo, hi)
#define _Frees_ptr_
#define _Frees_ptr_opt_
#define _Analysis_assume_(expr)
#define _Analysis_noreturn_
#define _Acquires_lock_(lock)
#define _Releases_lock_(lock)
#define _Requires_lock_held_(lock)
#define _Guarded_by_(lock)
#define _Interlocked_operand_
#define _Deref_out_
#define _Deref_out_opt_
#define _Deref_out_z_
#define _Deref_in_
#define _Deref_inout_
#define _Deref_pre_z_
#define _Deref_post_z_

/* --------------------------------------------- legacy (SAL 1) annotations */

#define __in_opt
#define __in_z
#define __in_opt_z
#define __in_bcount(size)
#define __in_ecount(size)
#define __in_bcount_opt(size)
#define __in_ecount_opt(size)
#define __in_bcount_z(size)
#define __in_ecount_z(size)
#define __in_xcount(size)
#define __in_range(lo, hi)
#define __out_opt
#define __out_z
#define __out_bcount(size)
#define __out_ecount(size)
#define __out_bcount_opt(size)
#define __out_ecount_opt(size)
#define __out_bcount_part(size, length)
#define __out_ecount_part(size, length)
#define __out_bcount_full(size)
#define __out_ecount_full(size)
#define __out_bcount_z(size)
#define __out_ecount_z(size)
#define __out_xcount(size)
#define __inout_opt
#define __inout_z
#define __inout_bcount(size)
#define __inout_ecount(size)
#define __inout_bcount_opt(size)
#define __inout_ecount_opt(size)
#define __inout_bcount_full(size)
#define __inout_ecount_full(size)
#define __inout_bcount_part(size, length)
#define __inout_ecount_part(size, length)
#define __deref_in
#define __deref_out
#define __deref_out_opt
#define __deref_out_z
#define __deref_out_ecount(size)
#define __deref_out_bcount(size)
#define __deref_inout
#define __deref_opt_out
#define __ecount(size)
#define __bcount(size)
#define __field_ecount(size)
#define __field_bcount(size)
#define __checkReturn
#define __nullterminated
#define __nullnullterminated
#define __success(expr)
#define __range(lo, hi)
#define __format_string
#define __analysis_assume(expr)
#define __notnull
#define __maybenull
#define __post
#define __pre
#define __callback

#ifdef RIIS_SAL_LEGACY_IN_OUT
#define __in
#define __out
#define __inout
#define __reserved
#endif

#endif /* RIIS_SAL_H */
