select count(*) from lineitem where l_shipdate between '1992-01-03' and '1998-11-30';
