select sum(l_extendedprice) from lineitem;
